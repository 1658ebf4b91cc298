"""Reconciliation: our books against the venues' own view of our accounts, which is the truth.

Pure and synchronous. `reconcile` lists every holding where the two differ, valued at the market; a perp whose
size differs is a drift too, but it is never corrected by bookkeeping (a position nobody ordered is for a human
to look at). `correction` is the change set that makes our token balances equal to the venues' — booked as
`Reason.RECONCILIATION`, so the difference shows as the `reconciliation` P&L component and the attribution
still sums exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from daemon.domain.ledger import ChangeSet, LedgerSnapshot, Reason, TokenChange
from daemon.domain.market import MarketState, MissingMarketData
from daemon.domain.messages import AccountReport
from daemon.domain.pnl import token_value_usd
from daemon.domain.transit import Allowance

ZERO = Decimal(0)
# Books kept with the same arithmetic agree exactly; this only absorbs Decimal's last digit on long chains.
EPSILON = Decimal("1e-18")


@dataclass(frozen=True, slots=True)
class Drift:
    account: str
    holding: str  # a token, or "perp:<instrument>"
    ours: Decimal
    theirs: Decimal
    value_usd: Decimal | None  # |theirs − ours| valued at the market (None: no price for it)

    @property
    def delta(self) -> Decimal:
        return self.theirs - self.ours

    @property
    def is_perp(self) -> bool:
        return self.holding.startswith("perp:")


@dataclass(frozen=True, slots=True)
class Reconciliation:
    accounts: tuple[str, ...]
    drifts: tuple[Drift, ...]
    # Differences that transfers still moving explain (daemon.domain.transit): not drifts, never corrected.
    in_transit: tuple[Drift, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.drifts

    def drift_usd(self) -> dict[str, Decimal]:
        """Per account, the total |value| of its drifts in USD (0 for an account that agrees)."""
        out = dict.fromkeys(self.accounts, ZERO)
        for d in self.drifts:
            out[d.account] = out.get(d.account, ZERO) + (d.value_usd or ZERO)
        return out

    def total_usd(self) -> Decimal:
        return sum(self.drift_usd().values(), ZERO)

    def unpriced(self) -> tuple[Drift, ...]:
        return tuple(d for d in self.drifts if d.value_usd is None)


def reconcile(ledger: LedgerSnapshot, reports: Iterable[AccountReport], market: MarketState,
              in_transit: Iterable[Allowance] = ()) -> Reconciliation:
    """Every holding where the books and the venues differ. `in_transit`: per account and token, how far the venue
    may be from the books because of transfers still moving; a token difference inside it is listed apart
    (`Reconciliation.in_transit`) and is not a drift: the transfer's own legs will book it."""
    allowed = {(a.account, a.token): a for a in in_transit}
    accounts: list[str] = []
    drifts: list[Drift] = []
    moving: list[Drift] = []
    for report in reports:
        account = report.account
        accounts.append(account)
        ours = {t: v for a, t, v in ledger.balances if a == account}
        theirs = dict(report.balances)
        for token in sorted(ours.keys() | theirs.keys()):
            mine, truth = ours.get(token, ZERO), theirs.get(token, ZERO)
            if abs(truth - mine) > EPSILON:
                allowance = allowed.get((account, token))
                found = moving if allowance is not None and allowance.explains(truth - mine, EPSILON) else drifts
                found.append(Drift(account, token, mine, truth, _value(account, token, truth - mine, market)))
        our_perps = {p.instrument: p.quantity for p in ledger.perps if p.venue == account}
        their_perps = dict(report.perps)
        for instrument in sorted(our_perps.keys() | their_perps.keys()):
            mine, truth = our_perps.get(instrument, ZERO), their_perps.get(instrument, ZERO)
            if abs(truth - mine) > EPSILON:
                asset = instrument[:-4] if instrument.endswith("USDT") else instrument
                drifts.append(Drift(account, f"perp:{instrument}", mine, truth,
                                    _value(account, asset, truth - mine, market)))
    return Reconciliation(tuple(accounts), tuple(drifts), tuple(moving))


def _value(account: str, token: str, delta: Decimal, market: MarketState) -> Decimal | None:
    try:
        return abs(token_value_usd(account, token, delta, market))
    except (MissingMarketData, KeyError):
        return None


def correction(result: Reconciliation, ts_ns: int, ref: str) -> ChangeSet | None:
    """The change set that brings our token balances to the venues' (perp drifts are not corrected here)."""
    tokens = tuple(TokenChange(d.account, d.holding, d.delta) for d in result.drifts if not d.is_perp)
    if not tokens:
        return None
    return ChangeSet(Reason.RECONCILIATION, ts_ns, tokens, ref=ref)


def must_halt(result: Reconciliation, halt_above_usd: Decimal) -> str:
    """Why the drift is beyond what bookkeeping may settle ("" if it is not): a perp we did not expect, a drift
    that cannot be valued, or one worth more than `halt_above_usd`."""
    perps = [d for d in result.drifts if d.is_perp]
    if perps:
        return "perp size differs from the venue: " + ", ".join(f"{d.account} {d.holding} ours {d.ours} venue "
                                                                  f"{d.theirs}" for d in perps)
    if result.unpriced():
        return "drift in a holding with no price: " + ", ".join(f"{d.account} {d.holding}" for d in result.unpriced())
    total = result.total_usd()
    if total > halt_above_usd:
        return f"balances differ from the venues by {total:.2f} USD (more than {halt_above_usd} USD)"
    return ""


def summarize(drifts: Iterable[Drift]) -> list[str]:
    return [f"{d.account}:{d.holding} ours {d.ours} venue {d.theirs}"
            + (f" ({d.value_usd:.2f} USD)" if d.value_usd is not None else "") for d in drifts]


def reports_expected(reports: Iterable[AccountReport]) -> int | None:
    """How many venue reports the books should have booked for these accounts to be current (None: unknown)."""
    total = 0
    for r in reports:
        if r.reports_sent is None:
            return None
        total += r.reports_sent
    return total

