"""Reconciliation: our books against the venues' own view of our accounts, which is the truth.

Pure and synchronous. `reconcile` lists every holding where the two differ, valued at the market; a perp whose
size differs is a drift too, but it is never corrected by bookkeeping (a position nobody ordered is for a human
to look at). `correction` is the change set that makes our token balances equal to the venues' — booked as
`Reason.RECONCILIATION`, so the difference shows as the `reconciliation` P&L component and the attribution
still sums exactly.

`Tolerance` is how far a token balance may differ and still agree: an absolute dust level per asset (a venue's
rounding) or a fraction of the venue's figure. A difference inside it is no drift (it neither alerts nor halts) but
is still booked to the venues' figure: the books keep following the truth.

`ReportCount` counts venue reports per ledger account they touch, distinct by report, on both sides of the books'
inbox: the live adapters count what they publish (each account report says how many touching it were published
this run), the positions actor what it has booked, so the reconciler compares an account only once every report
published for it has been booked (a fill or a transaction between the venue and the books is not a drift).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from daemon.domain.ledger import ChangeSet, LedgerSnapshot, Reason, TokenChange
from daemon.domain.market import MarketState, MissingMarketData
from daemon.domain.messages import AccountReport, BalancesChanged, FillReport, OrderFilled
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
class Tolerance:
    """How far a token balance may differ from the venue's and still agree: `dust` per token (absolute, the
    venue's rounding), or `relative` of the venue's figure (0.01: 1 %). Perp sizes are never tolerated."""

    dust: Mapping[str, Decimal] = field(default_factory=dict)
    relative: Decimal = ZERO

    def explains(self, token: str, ours: Decimal, theirs: Decimal) -> bool:
        delta = abs(theirs - ours)
        return delta <= self.dust.get(token, ZERO) or delta <= self.relative * abs(theirs)


EXACT = Tolerance()


@dataclass(frozen=True, slots=True)
class Reconciliation:
    accounts: tuple[str, ...]
    drifts: tuple[Drift, ...]
    # Differences that transfers still moving explain (daemon.domain.transit): not drifts, never corrected.
    in_transit: tuple[Drift, ...] = ()
    # Differences inside the tolerance: not drifts (no alert, no halt), but booked to the venues' figures.
    tolerated: tuple[Drift, ...] = ()

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
              in_transit: Iterable[Allowance] = (), tolerance: Tolerance = EXACT,
              tokens: bool = True) -> Reconciliation:
    """Every holding where the books and the venues differ. `in_transit`: per account and token, how far the venue
    may be from the books because of transfers still moving; a token difference inside it is listed apart
    (`Reconciliation.in_transit`) and is not a drift: the transfer's own legs will book it. A token difference
    inside `tolerance` is listed apart too (`Reconciliation.tolerated`). `tokens=False`: the perps alone."""
    allowed = {(a.account, a.token): a for a in in_transit}
    accounts: list[str] = []
    drifts: list[Drift] = []
    moving: list[Drift] = []
    tolerated: list[Drift] = []
    for report in reports:
        account = report.account
        accounts.append(account)
        ours = {t: v for a, t, v in ledger.balances if a == account}
        theirs = dict(report.balances)
        for token in sorted(ours.keys() | theirs.keys()) if tokens else ():
            mine, truth = ours.get(token, ZERO), theirs.get(token, ZERO)
            if abs(truth - mine) > EPSILON:
                allowance = allowed.get((account, token))
                if allowance is not None and allowance.explains(truth - mine, EPSILON):
                    found = moving
                elif tolerance is not EXACT and tolerance.explains(token, mine, truth):
                    found = tolerated
                else:
                    found = drifts
                found.append(Drift(account, token, mine, truth, _value(account, token, truth - mine, market)))
        our_perps = {p.instrument: p.quantity for p in ledger.perps if p.venue == account}
        their_perps = dict(report.perps)
        for instrument in sorted(our_perps.keys() | their_perps.keys()):
            mine, truth = our_perps.get(instrument, ZERO), their_perps.get(instrument, ZERO)
            if abs(truth - mine) > EPSILON:
                asset = instrument[:-4] if instrument.endswith("USDT") else instrument
                drifts.append(Drift(account, f"perp:{instrument}", mine, truth,
                                    _value(account, asset, truth - mine, market)))
    return Reconciliation(tuple(accounts), tuple(drifts), tuple(moving), tuple(tolerated))


def _value(account: str, token: str, delta: Decimal, market: MarketState) -> Decimal | None:
    try:
        return abs(token_value_usd(account, token, delta, market))
    except (MissingMarketData, KeyError):
        return None


def correction(result: Reconciliation, ts_ns: int, ref: str) -> ChangeSet | None:
    """The change set that brings our token balances to the venues' (perp drifts are not corrected here), the
    differences inside the tolerance included."""
    tokens = tuple(TokenChange(d.account, d.holding, d.delta)
                   for d in sorted((*result.drifts, *result.tolerated), key=lambda d: (d.account, d.holding))
                   if not d.is_perp)
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



Report = OrderFilled | FillReport | BalancesChanged


def accounts_touched(report: Report) -> frozenset[str]:
    """The ledger accounts a venue report changes: its token changes' accounts and its perps' venues (a fill's:
    the venue of its instrument)."""
    if not isinstance(report, BalancesChanged):
        return frozenset((report.instrument_id.split(":", 1)[0],))
    change = report.change
    return frozenset(t.account for t in change.tokens) | frozenset(p.venue for p in change.perps)


class ReportCount:
    """Per ledger account, how many distinct venue reports touching it have gone by (`<venue>:<report id>`, as the
    books key them: a report resent is counted once). One counter is shared by the adapters of a live run (what
    they published) and one kept by the positions actor (what it booked); both start at zero with the run."""

    __slots__ = ("_by_account", "_keys")

    def __init__(self) -> None:
        self._by_account: dict[str, int] = {}
        self._keys: set[str] = set()

    def count(self, report: Report) -> None:
        key = f"{report.venue}:{report.report_id}" if isinstance(report, BalancesChanged) \
            else f"{report.venue}:{report.trade_id}"
        if key in self._keys:
            return
        self._keys.add(key)
        for account in accounts_touched(report):
            self._by_account[account] = self._by_account.get(account, 0) + 1

    def of(self, account: str) -> int:
        return self._by_account.get(account, 0)

    def by_account(self) -> tuple[tuple[str, int], ...]:
        return tuple(sorted(self._by_account.items()))


def accounts_behind(reports: Iterable[AccountReport], booked: Mapping[str, int],
                    corrections: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The accounts whose books have not yet booked every report published for them, as (booked, expected):
    expected is the venue's `reports_sent` (reports touching the account, this run) plus the reconciler's own
    corrections of it. An account whose venue cannot count (None) is never behind."""
    behind = {}
    for r in reports:
        if r.reports_sent is None:
            continue
        expected = r.reports_sent + corrections.get(r.account, 0)
        if booked.get(r.account, 0) < expected:
            behind[r.account] = (booked.get(r.account, 0), expected)
    return behind
