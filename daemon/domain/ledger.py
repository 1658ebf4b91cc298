"""The ledger: every balance the strategy holds, in native token units, changed only by atomic change sets.

One on-chain wallet holds tokens, including AAVE aTokens and variable-debt tokens as *scaled* balances
(constant between actions; the native amount is scaled × index, see `daemon.domain.aave`). Each exchange is
a separate account of spot assets, plus perp positions per instrument with a signed cost basis (size-weighted
entry; realized P&L on reductions and flips, credited to the venue's USDT because the perps are
USDT-margined). Nothing here prices anything: valuation lives in exposure and P&L.

A change set applies completely or not at all: token and derivative changes of one action (a fill, a flash
loan leverage entry, a funding payment) land together, so no reader can ever see half an action. Each
applied set is kept, with its reason, in a bounded history.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

ZERO = Decimal(0)
BASIS_EXPONENT = Decimal("1e-18")
WALLET = "wallet"
# Funds between two of our accounts (a withdrawal not yet credited at its destination): see daemon.domain.transit.
TRANSIT = "transit"

WALLET_TOKENS: tuple[str, ...] = (
    "ETH", "USDT", "BTC", "weETH", "wstETH",
    "aWeETH", "awstETH", "aUSDT", "aBTC", "aWETH",  # scaled
    "variableDebtWETH", "variableDebtUSDT", "variableDebtBTC",  # scaled
    "KING", "EIGEN", "ETHFI",
)
SCALED_TOKENS = frozenset(t for t in WALLET_TOKENS if t.startswith(("a", "variableDebt")) and t != "ETHFI")
CEX_ASSETS: tuple[str, ...] = ("USDT", "ETH", "BTC")


@dataclass(slots=True)
class PerpPosition:
    """A perp position held as a signed cost basis rather than an average price.

    An average price needs a division, and a rounded average would make realized + unrealized P&L drift
    from the cash actually paid. With the cost basis, the only division (the share of basis a reduction
    removes) is booked identically on both sides, so P&L stays exact to the last digit.
    """

    quantity: Decimal = ZERO  # signed, negative = short
    cost: Decimal = ZERO  # signed Σ quantity × price of what is still open
    realized_pnl: Decimal = ZERO

    @property
    def average_price(self) -> Decimal:
        return self.cost / self.quantity if self.quantity else ZERO

    def apply(self, signed_qty: Decimal, price: Decimal) -> Decimal:
        """Add `signed_qty` at `price`; return the P&L this realizes."""
        q0 = self.quantity
        if q0 == 0 or (q0 > 0) == (signed_qty > 0):
            self.quantity = q0 + signed_qty
            self.cost += signed_qty * price
            return ZERO
        closed = min(abs(signed_qty), abs(q0))
        direction = 1 if q0 > 0 else -1
        # Quantized so that every later sum stays within Decimal's 28 digits, i.e. exact.
        removed = self.cost if closed == abs(q0) else (self.cost * closed / abs(q0)).quantize(BASIS_EXPONENT)
        realized = direction * closed * price - removed
        self.realized_pnl += realized
        self.cost -= removed
        self.quantity = q0 + signed_qty
        if self.quantity and (self.quantity > 0) != (q0 > 0):  # flipped: the remainder opens at `price`
            self.cost = self.quantity * price
        return realized

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.quantity * mark - self.cost


class Reason(StrEnum):
    """Why balances changed (the balance-change events of seed 000, plus capital flows)."""

    INITIAL_CAPITAL = "INITIAL_CAPITAL"
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    GAS_FEE_PAID = "GAS_FEE_PAID"
    STAKE_DEPOSIT = "STAKE_DEPOSIT"
    STAKE_WITHDRAWAL = "STAKE_WITHDRAWAL"
    COLLATERAL_SUPPLIED = "COLLATERAL_SUPPLIED"
    COLLATERAL_WITHDRAWN = "COLLATERAL_WITHDRAWN"
    LOAN_CREATED = "LOAN_CREATED"
    LOAN_REPAID = "LOAN_REPAID"
    ATOMIC_LEVERAGE_EXECUTION = "ATOMIC_LEVERAGE_EXECUTION"
    ATOMIC_DELEVERAGE_EXECUTION = "ATOMIC_DELEVERAGE_EXECUTION"
    LIQUIDATION = "LIQUIDATION"
    VENUE_TRANSFER = "VENUE_TRANSFER"
    KING_REWARD_DISTRIBUTION = "KING_REWARD_DISTRIBUTION"
    KING_UNWRAPPED = "KING_UNWRAPPED"
    SEASONAL_REWARDS_SOLD = "SEASONAL_REWARDS_SOLD"
    SPOT_TRADE = "SPOT_TRADE"
    TRADE_EXECUTED = "TRADE_EXECUTED"
    FUNDING_PAYMENT = "FUNDING_PAYMENT"
    RECONCILIATION = "RECONCILIATION"


class LedgerError(ValueError):
    """A change set that cannot be applied; the ledger is left exactly as it was."""


@dataclass(frozen=True, slots=True)
class TokenChange:
    account: str  # "wallet" or an exchange name
    token: str
    delta: Decimal  # native units; scaled units for aTokens and debt tokens


@dataclass(frozen=True, slots=True)
class PerpChange:
    venue: str
    instrument: str  # e.g. "ETHUSDT"
    delta_qty: Decimal  # signed: negative sells
    price: Decimal


@dataclass(frozen=True, slots=True)
class ChangeSet:
    reason: Reason
    ts_ns: int
    tokens: tuple[TokenChange, ...] = ()
    perps: tuple[PerpChange, ...] = ()
    ref: str = ""  # instruction id, trade id, or parent atomic transaction


@dataclass(frozen=True, slots=True)
class AppliedChange:
    change: ChangeSet
    sequence: int
    realized_pnl: tuple[tuple[str, Decimal], ...]  # (venue:instrument, realized) for perp reductions


@dataclass(frozen=True, slots=True)
class PerpHolding:
    venue: str
    instrument: str
    quantity: Decimal
    cost: Decimal
    realized_pnl: Decimal

    @property
    def entry_price(self) -> Decimal:
        return self.cost / self.quantity if self.quantity else ZERO


@dataclass(frozen=True, slots=True)
class LedgerSnapshot:
    sequence: int
    ts_ns: int
    balances: tuple[tuple[str, str, Decimal], ...]  # (account, token, amount), non-zero only, sorted
    perps: tuple[PerpHolding, ...]

    def balance(self, account: str, token: str) -> Decimal:
        for a, t, amount in self.balances:
            if a == account and t == token:
                return amount
        return ZERO


@dataclass
class Ledger:
    """The single-writer book of balances (the positions actor owns it)."""

    venues: tuple[str, ...]
    gas_debt_allowed: bool = False  # USDT share class: wallet ETH may go negative (gas debt, ADR-12)
    history_limit: int = 1000
    _balances: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    _perps: dict[tuple[str, str], PerpPosition] = field(default_factory=dict)
    _history: deque[AppliedChange] = field(init=False)
    sequence: int = 0
    ts_ns: int = 0

    def __post_init__(self) -> None:
        self._history = deque(maxlen=self.history_limit)

    # --- reading ------------------------------------------------------------------------------------------

    def balance(self, account: str, token: str) -> Decimal:
        return self._balances.get((account, token), ZERO)

    def perp(self, venue: str, instrument: str) -> PerpPosition:
        return self._perps.get((venue, instrument)) or PerpPosition()

    def open_perps(self, venue: str) -> list[tuple[str, PerpPosition]]:
        """(instrument, position) of `venue`'s open perps, live objects: read them, never change them."""
        return [(i, p) for (v, i), p in self._perps.items() if v == venue and p.quantity]

    @property
    def history(self) -> tuple[AppliedChange, ...]:
        return tuple(self._history)

    def snapshot(self) -> LedgerSnapshot:
        balances = tuple(sorted((a, t, v) for (a, t), v in self._balances.items() if v != 0))
        perps = tuple(
            PerpHolding(v, i, p.quantity, p.cost, p.realized_pnl)
            for (v, i), p in sorted(self._perps.items())
            if p.quantity != 0 or p.realized_pnl != 0
        )
        return LedgerSnapshot(self.sequence, self.ts_ns, balances, perps)

    # --- writing ------------------------------------------------------------------------------------------

    def apply(self, change: ChangeSet) -> AppliedChange:
        """Apply every change of `change` or none of them; raise `LedgerError` naming what is wrong."""
        staged: dict[tuple[str, str], Decimal] = {}
        for tc in change.tokens:
            self._check_token(tc)
            key = (tc.account, tc.token)
            staged[key] = staged.get(key, self.balance(*key)) + tc.delta
        staged_perps: dict[tuple[str, str], PerpPosition] = {}
        realized: list[tuple[str, Decimal]] = []
        for pc in change.perps:
            if pc.venue not in self.venues:
                raise LedgerError(f"{change.reason}: unknown venue {pc.venue!r} for perp {pc.instrument}")
            if pc.delta_qty == 0 or pc.price <= 0:
                raise LedgerError(f"{change.reason}: perp change on {pc.venue}:{pc.instrument} needs a non-zero "
                                  f"quantity and a positive price (was {pc.delta_qty} @ {pc.price})")
            key = (pc.venue, pc.instrument)
            base = staged_perps.get(key) or self.perp(*key)
            position = PerpPosition(base.quantity, base.cost, base.realized_pnl)
            pnl = position.apply(pc.delta_qty, pc.price)
            staged_perps[key] = position
            if pnl:
                realized.append((f"{pc.venue}:{pc.instrument}", pnl))
                usdt = (pc.venue, "USDT")
                staged[usdt] = staged.get(usdt, self.balance(*usdt)) + pnl
        for (account, token), amount in staged.items():
            if amount < 0 and not self._may_go_negative(account, token):
                raise LedgerError(f"{change.reason}: {account}:{token} would be {amount} (was "
                                  f"{self.balance(account, token)}); only gas debt may be negative")
        # Validated: commit everything at once.
        self._balances.update(staged)
        self._perps.update(staged_perps)
        self.sequence += 1
        self.ts_ns = max(self.ts_ns, change.ts_ns)
        applied = AppliedChange(change, self.sequence, tuple(realized))
        self._history.append(applied)
        return applied

    def apply_all(self, changes: Iterable[ChangeSet]) -> list[AppliedChange]:
        return [self.apply(c) for c in changes]

    def _check_token(self, tc: TokenChange) -> None:
        if tc.account == WALLET:
            if tc.token not in WALLET_TOKENS:
                raise LedgerError(f"unknown wallet token {tc.token!r}")
        elif tc.account in self.venues:
            if tc.token not in CEX_ASSETS:
                raise LedgerError(f"unknown asset {tc.token!r} on {tc.account}")
        elif tc.account == TRANSIT:  # what moves between accounts: an exchange asset or a wallet token
            if tc.token not in CEX_ASSETS and tc.token not in WALLET_TOKENS:
                raise LedgerError(f"unknown token {tc.token!r} in transit")
        else:
            raise LedgerError(f"unknown account {tc.account!r}")

    def _may_go_negative(self, account: str, token: str) -> bool:
        return self.gas_debt_allowed and account == WALLET and token == "ETH"


# --- builders for the actions whose arithmetic belongs to the book ---------------------------------------


def king_unwrap(amount_king: Decimal, eigen_per_king: Decimal, ethfi_per_king: Decimal, ts_ns: int,
                ref: str = "") -> ChangeSet:
    """Unwrap KING into the EIGEN and ETHFI it represents.

    The per-KING amounts come from the vault's composition at unwrap time (its holdings over its shares), so
    one KING is worth its USD share of the vault, and the mix changes as the vault receives deposits.
    """
    if amount_king <= 0:
        raise LedgerError(f"KING to unwrap must be positive, was {amount_king}")
    return ChangeSet(Reason.KING_UNWRAPPED, ts_ns, (
        TokenChange(WALLET, "KING", -amount_king),
        TokenChange(WALLET, "EIGEN", amount_king * eigen_per_king),
        TokenChange(WALLET, "ETHFI", amount_king * ethfi_per_king),
    ), ref=ref)


def king_unwrap_due(king_usd: Decimal, unwrap_gas_usd: Decimal, floor_usd: Decimal = Decimal(100)) -> bool:
    """Unwrap once the KING held is worth more than both the floor and 100× the unwrap's gas (DOMAIN §8 #24:
    the guide gives each rule alone; either alone unwraps dust in a gas spike or waits forever when gas is
    cheap)."""
    return king_usd > max(floor_usd, 100 * unwrap_gas_usd)


@dataclass(frozen=True, slots=True)
class KingVault:
    """The KING vault: what it holds and how many KING shares exist (KING_TOKEN_HANDLING_GUIDE)."""

    eigen: Decimal
    ethfi: Decimal
    shares: Decimal

    def per_king(self) -> tuple[Decimal, Decimal]:
        return self.eigen / self.shares, self.ethfi / self.shares

    def deposit(self, eigen: Decimal, ethfi: Decimal, eigen_usd: Decimal, ethfi_usd: Decimal) -> KingVault:
        """Add tokens; new shares are minted at the vault's USD value per share, so old holders lose nothing."""
        value_per_share = (self.eigen * eigen_usd + self.ethfi * ethfi_usd) / self.shares
        minted = (eigen * eigen_usd + ethfi * ethfi_usd) / value_per_share
        return KingVault(self.eigen + eigen, self.ethfi + ethfi, self.shares + minted)
