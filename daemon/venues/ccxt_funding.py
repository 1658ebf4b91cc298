"""Funding on the live venues through ccxt: the payments each venue actually made, and its current and next rate.

**Payments.** `FundingPoller` reads the venue's own record of what it paid or took on each traded perpetual —
Binance USDⓈ-M income `FUNDING_FEE`, Bybit's executions of type `Funding` (whose fee is positive when *paid*:
the parser negates it), OKX's bills of type 8 — through ccxt's `fetch_funding_history`, from the last payment
seen, and publishes each payment once, as a `FundingBooked` (a `BalancesChanged` with `Reason.FUNDING_PAYMENT`) on
the venue report channel: the books receive it in order with the fills. Amounts are read exactly from the raw
payload (`daemon.venues.ccxt_parse.parse_funding`), positive = received.

Its `report_id` is `funding-<the venue's own id>` (Binance `tranId`, Bybit `execId`, OKX `billId`): unique per
venue and the same on every read, so a payment read twice — two polls over the same window, or a new poller after
a restart reading from an earlier point — is recognised by the books (which key reports by venue and report id)
and booked once. A poller also skips the ids it has published itself, and takes `seen` (the ids the journal holds)
and `since_ms` to resume where the previous run stopped.

**While down.** A payment the venue made while the daemon was down is in the balances a live start opens its books
on. `paid_between` reads such a window (from what the journal last booked to the moment the accounts were read)
without publishing it: `daemon.recovery.funding_paid_while_down` returns those payments so the start-up can take
them out of the opening and book them as funding, each once, and start the poller where the window ended.

The rate and the position the payment was paid on travel with it where the venue says: Bybit gives both (`feeRate`,
`execQty` and side); Binance's income record and OKX's bill give neither the rate nor a signed position (OKX gives
the size in contracts without its side), so those are None rather than guessed.

**Rates.** `read_funding_rate` is one reading of a perpetual's funding: the rate of the coming settlement and its
time, and — where the venue publishes it (OKX's `nextFundingRate`, when not empty) — the rate of the settlement
after that. `FundingRateReading.message()` is the `FundingRateReported` the market-data side already carries; the
message has no field for the next rate, so the reading keeps it (`next_rate`, `next_settles_at_ns`) for whoever
wants it, rather than the message growing a field only one venue fills.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt

from daemon.bus import LosslessChannel
from daemon.clock import Clock
from daemon.domain.ids import InstrumentId, VenueId
from daemon.domain.ledger import ChangeSet, Reason, TokenChange
from daemon.domain.messages import BalancesChanged, FundingRateReported, VenueReport
from daemon.domain.reconcile import ReportCount
from daemon.errors import VenueBadPayload, VenueError
from daemon.venues.ccxt_errors import Call, map_error
from daemon.venues.ccxt_exchange import ccxt_symbol
from daemon.venues.ccxt_parse import FundingPayment, exact, family, parse_funding

NS_PER_MS = 1_000_000
PAGE = 100  # entries per request (Binance allows 1000, Bybit 100, OKX 100)
MAX_PAGES = 50  # per symbol and poll: a backlog larger than this is read by the next poll


@dataclass(frozen=True, slots=True)
class FundingBooked(BalancesChanged):
    """A funding payment as the books receive it: the change set, plus what the venue said it was paid on."""

    instrument_id: str = ""  # our perp id: binance:Perp:ETHUSDT
    rate: Decimal | None = None  # the funding rate applied, where the venue says (Bybit)
    position: Decimal | None = None  # the signed position (base units) it was paid on, where the venue says (Bybit)


def funding_report(payment: FundingPayment, ts_recv: int) -> FundingBooked:
    report_id = f"funding-{payment.payment_id}"
    change = ChangeSet(Reason.FUNDING_PAYMENT, payment.ts_event,
                       (TokenChange(payment.venue, payment.asset, payment.amount),), ref=report_id)
    return FundingBooked(VenueId(payment.venue), report_id, change, payment.ts_event, ts_recv,
                         InstrumentId(f"{payment.venue}:Perp:{payment.instrument}"), payment.rate, payment.position)


def perp_symbol(instrument: str) -> str:
    """`binance:Perp:ETHUSDT` → ccxt's `ETH/USDT:USDT`."""
    kind, symbol, _ = ccxt_symbol(instrument)
    if kind != "Perp":
        raise ValueError(f"{instrument} is not a perpetual: it pays no funding")
    return symbol


class FundingPoller:
    """The funding payments of one venue's perps (one ccxt client: `binanceusdm`, `bybit`, `okx`)."""

    def __init__(self, venue: str, client: Any, instruments: Iterable[str], reports: LosslessChannel[VenueReport],
                 clock: Clock, *, since_ms: int | None = None, seen: Iterable[str] = (), page: int = PAGE,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 count: ReportCount | None = None) -> None:
        """`instruments`: our perp ids (`binance:Perp:ETHUSDT`; spot ones are ignored). `since_ms`: the first poll
        reads from there (None: from now, i.e. only payments made from start-up on). `seen`: payment ids already
        booked (the venue's own ids, as in `report_id` after `funding-`). `count`: the run's count of published
        reports per account, shared with the venue's adapter (what its account report says was sent)."""
        family(client.id)  # a venue we can parse, or VenueBadPayload now rather than at the first payment
        self.venue = venue
        self._client = client
        self._symbols = {perp_symbol(i): InstrumentId(i) for i in instruments if ":Perp:" in i}
        self._reports = reports
        self._clock = clock
        self._page = page
        start = wall_ms() if since_ms is None else since_ms
        self._since_ms = dict.fromkeys(self._symbols, start)
        self._seen: set[str] = set(seen)
        self.published = 0
        self._count = count

    @property
    def since_ms(self) -> Mapping[str, int]:
        """Per ccxt symbol, where the next poll reads from (the newest payment seen)."""
        return dict(self._since_ms)

    async def poll(self) -> int:
        """Publish every payment since the last one seen on every traded perp; how many were new."""
        return sum([await self._poll_symbol(symbol) for symbol in self._symbols])

    async def _poll_symbol(self, symbol: str) -> int:
        new = 0
        for _ in range(MAX_PAGES):
            since = self._since_ms[symbol]
            try:
                entries = await self._client.fetch_funding_history(symbol, since, self._page)
            except ccxt.BaseError as exc:
                raise self._error(exc, f"reading the funding history of {symbol}") from None
            payments = [parse_funding(e, self._client.id, venue=self.venue) for e in entries]
            for payment in sorted(payments, key=lambda p: (p.ts_event, p.payment_id)):
                new += await self._publish(symbol, payment)
            # A full page whose newest entry moved the window on: read on from there; else this is all.
            if len(entries) < self._page or self._since_ms[symbol] == since:
                return new
        return new

    async def _publish(self, symbol: str, payment: FundingPayment) -> int:
        self._since_ms[symbol] = max(self._since_ms[symbol], payment.ts_event // NS_PER_MS)
        if payment.payment_id in self._seen:
            return 0
        self._check_instrument(symbol, payment)
        report = funding_report(payment, self._clock.now_ns())
        if self._count is not None:
            self._count.count(report)  # before the send: the reconciler waits for it to be booked
        await self._reports.send(report)
        self._seen.add(payment.payment_id)  # once delivered: a failed send is read and sent again
        self.published += 1
        return 1

    async def paid_between(self, since_ms: int, until_ms: int, seen: Iterable[str] = ()) -> list[FundingBooked]:
        """The payments made from `since_ms` (inclusive) to `until_ms` (exclusive) on every traded perp, but for the
        ids in `seen` (the journal's) and those this poller published, oldest first — read, not published: a start-up
        books them after the opening (`daemon.recovery.funding_paid_while_down`). Each is then one this poller has
        seen, so a poll from `until_ms` never publishes it again, should the venue count its bound inclusive.
        Raises a `VenueError`."""
        skip = self._seen | set(seen)
        found: list[FundingBooked] = []
        for symbol in self._symbols:
            since = since_ms
            for _ in range(MAX_PAGES):
                try:
                    entries = await self._client.fetch_funding_history(symbol, since, self._page)
                except ccxt.BaseError as exc:
                    raise self._error(exc, f"reading the funding history of {symbol}") from None
                payments = sorted((parse_funding(e, self._client.id, venue=self.venue) for e in entries),
                                  key=lambda p: (p.ts_event, p.payment_id))
                newest = since
                for payment in payments:
                    newest = max(newest, payment.ts_event // NS_PER_MS)
                    if payment.ts_event // NS_PER_MS >= until_ms or payment.payment_id in skip:
                        continue
                    self._check_instrument(symbol, payment)
                    found.append(funding_report(payment, self._clock.now_ns()))
                    skip.add(payment.payment_id)
                # A full page that moved the window on, still short of `until_ms`: read on from its newest entry.
                if len(entries) < self._page or newest == since or newest >= until_ms:
                    break
                since = newest
        self._seen.update(r.report_id.removeprefix("funding-") for r in found)
        return sorted(found, key=lambda r: (r.ts_event, r.report_id))

    def _check_instrument(self, symbol: str, payment: FundingPayment) -> None:
        if payment.instrument != self._symbols[symbol].rsplit(":", 1)[-1]:
            raise VenueBadPayload(f"{self.venue}: funding {payment.payment_id} is for {payment.instrument}, asked for "
                                  f"{symbol}")

    def _error(self, exc: BaseException, what: str) -> VenueError:
        error = map_error(exc, venue=self.venue, call=Call.READ,
                          headers=getattr(self._client, "last_response_headers", None) or None)
        error.args = (f"{error} (while {what})",)
        return error


# --- the rate -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FundingRateReading:
    """A perpetual's funding as the venue publishes it now (positive: longs pay shorts)."""

    instrument_id: InstrumentId
    rate: Decimal  # the rate of the coming settlement
    settles_at_ns: int | None  # when that settlement is
    next_rate: Decimal | None  # the rate of the settlement after it, where the venue publishes one (OKX)
    next_settles_at_ns: int | None
    ts_ns: int

    def message(self, ts_recv: int) -> FundingRateReported:
        """The market-data message (it carries the coming settlement's rate and time only)."""
        return FundingRateReported(self.instrument_id, self.rate, self.settles_at_ns or 0, self.ts_ns, ts_recv)


# Raw fields of `fetch_funding_rate`'s payload per venue: (rate, its settlement time, next rate, next time).
_RATE_FIELDS = {
    "binance": ("lastFundingRate", "nextFundingTime", None, None),
    "bybit": ("fundingRate", "nextFundingTime", None, None),
    "okx": ("fundingRate", "fundingTime", "nextFundingRate", "nextFundingTime"),
}


async def read_funding_rate(client: Any, instrument: str, now_ns: int, *, venue: str | None = None
                            ) -> FundingRateReading:
    """One reading of `instrument`'s funding rate (our id, `okx:Perp:ETHUSDT`) from the venue; raises a
    `VenueError`."""
    symbol = perp_symbol(instrument)
    fam = family(client.id)
    try:
        raw = await client.fetch_funding_rate(symbol)
    except ccxt.BaseError as exc:
        raise map_error(exc, venue=venue or fam, call=Call.READ,
                        headers=getattr(client, "last_response_headers", None) or None) from None
    info = raw.get("info") if isinstance(raw.get("info"), dict) else {}
    rate_f, time_f, next_rate_f, next_time_f = _RATE_FIELDS[fam]
    where = f"{client.id} {symbol} funding"
    rate = exact(info.get(rate_f), f"{where} {rate_f}", raw.get("fundingRate"))
    next_rate = None
    if next_rate_f is not None and info.get(next_rate_f) not in (None, ""):
        next_rate = exact(info[next_rate_f], f"{where} {next_rate_f}")
    ts = raw.get("timestamp")
    ts_ns = min(int(ts) * NS_PER_MS, now_ns) if isinstance(ts, int | float) and ts > 0 else now_ns
    return FundingRateReading(InstrumentId(instrument), rate, _ms_ns(info.get(time_f)), next_rate,
                              _ms_ns(info.get(next_time_f)) if next_time_f else None, ts_ns)


def _ms_ns(value: object) -> int | None:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return int(text) * NS_PER_MS if text.isdigit() and int(text) > 0 else None
