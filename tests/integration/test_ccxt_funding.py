"""Funding through the real ccxt against the exchange fake (TLS, the venues' real host names): the payments each
venue made, booked once with the right sign and amount, and the current and next funding rate
(`daemon.venues.ccxt_funding`)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from daemon.bus import LosslessChannel
from daemon.clock import WallClock
from daemon.domain.ledger import ChangeSet, Ledger, LedgerError, Reason, TokenChange
from daemon.domain.messages import BalancesChanged, FundingRateReported, VenueReport
from daemon.venues.ccxt_exchange import CcxtExchange, CcxtVenueConfig, Credentials
from daemon.venues.ccxt_funding import FundingBooked, FundingPoller, read_funding_rate

pytestmark = [pytest.mark.exchange_fake, pytest.mark.asyncio]

D = Decimal
# venue → (ccxt exchange id, the fake's symbol, our instrument, the order size in ccxt's amount for 1 ETH)
VENUES = {
    "binance": ("binanceusdm", "ETHUSDT", "1"),
    "bybit": ("bybit", "ETHUSDT", "1"),
    "okx": ("okx", "ETH-USDT-SWAP", "10"),  # OKX counts contracts of 0.1 ETH
}


def state(fake: Any, venue: str) -> Any:
    return getattr(fake, venue)


async def opened(fake: Any, venue: str, side: str) -> Any:
    """A ccxt client of `venue` holding 1 ETH of perp, long or short, through a market order on the fake."""
    exchange_id, _, amount = VENUES[venue]
    client = await fake.client(exchange_id)
    await client.load_markets()
    await client.create_order("ETH/USDT:USDT", "market", side, amount)
    return client


def drain(reports: LosslessChannel[VenueReport]) -> list[FundingBooked]:
    out = []
    while len(reports):
        report = reports.receive_nowait()
        assert isinstance(report, FundingBooked)
        out.append(report)
    return out


class Books:
    """What the positions actor does with a venue report: booked once per (venue, report id)."""

    def __init__(self) -> None:
        self.ledger = Ledger(("binance", "bybit", "okx"))
        self.ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tuple(TokenChange(v, "USDT", D(1000)) for v in VENUES)))
        self.booked: set[str] = set()

    def book(self, report: BalancesChanged) -> None:
        key = f"{report.venue}:{report.report_id}"
        if key not in self.booked:
            self.ledger.apply(report.change)
            self.booked.add(key)


@pytest.mark.parametrize("venue", list(VENUES))
@pytest.mark.parametrize(("side", "sign"), [("sell", 1), ("buy", -1)])
async def test_a_settled_payment_is_booked_once_with_the_venues_sign_and_amount(
        exchange_fake: Any, venue: str, side: str, sign: int) -> None:
    client = await opened(exchange_fake, venue, side)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    poller = FundingPoller(venue, client, [f"{venue}:Perp:ETHUSDT", f"{venue}:Spot:ETHUSDT"], reports, WallClock(),
                           since_ms=0)
    assert await poller.poll() == 0  # nothing settled yet
    income = state(exchange_fake, venue).settle_funding(VENUES[venue][1], D("0.0001"))
    assert income is not None

    assert await poller.poll() == 1
    assert await poller.poll() == 0  # the same window read again: nothing new
    (paid,) = drain(reports)
    # A positive rate: longs pay shorts. 1 ETH × 3000 × 0.0001 = 0.3 USDT, received by the short.
    assert paid.change.reason is Reason.FUNDING_PAYMENT
    (token,) = paid.change.tokens
    assert (token.account, token.token, token.delta) == (venue, "USDT", sign * D("0.3"))
    assert paid.venue == venue and paid.report_id == f"funding-{income.tran_id}"
    assert paid.instrument_id == f"{venue}:Perp:ETHUSDT"
    if venue == "bybit":  # the only venue whose record says the rate and the position
        assert paid.rate == D("0.0001") and paid.position == -sign * D(1)
    else:
        assert paid.rate is None and paid.position is None

    # A restart: a new poller reading from the start finds the same payment under the same id; booked once.
    books = Books()
    books.book(paid)
    again: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    assert await FundingPoller(venue, client, [f"{venue}:Perp:ETHUSDT"], again, WallClock(), since_ms=0).poll() == 1
    (replayed,) = drain(again)
    assert replayed.report_id == paid.report_id and replayed.change == paid.change
    books.book(replayed)
    assert books.ledger.balance(venue, "USDT") == 1000 + sign * D("0.3") and books.ledger.sequence == 2
    # … and one told what the journal holds publishes nothing at all.
    resumed = FundingPoller(venue, client, [f"{venue}:Perp:ETHUSDT"], again, WallClock(), since_ms=0,
                            seen=[paid.report_id.removeprefix("funding-")])
    assert await resumed.poll() == 0 and not len(again)


async def test_payments_are_read_page_by_page_and_each_once(exchange_fake: Any) -> None:
    client = await opened(exchange_fake, "binance", "sell")
    for _ in range(7):  # a millisecond apart, as payments 8 h apart are (a page ends on a later timestamp)
        exchange_fake.binance.settle_funding("ETHUSDT", D("0.0002"))
        await asyncio.sleep(0.002)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    poller = FundingPoller("binance", client, ["binance:Perp:ETHUSDT"], reports, WallClock(), since_ms=0, page=3)
    assert await poller.poll() == 7
    payments = drain(reports)
    assert len({p.report_id for p in payments}) == 7
    assert all(p.change.tokens[0].delta == D("0.6") for p in payments)
    exchange_fake.binance.settle_funding("ETHUSDT", D("-0.0001"))  # a negative rate: the short pays
    assert await poller.poll() == 1
    (last,) = drain(reports)
    assert last.change.tokens[0].delta == D("-0.3")


async def test_the_adapters_own_client_polls_funding(exchange_fake: Any) -> None:
    """Through `CcxtExchange.ccxt_clients`: the poller shares the adapter's client (its markets, its session)."""
    creds = exchange_fake.credentials("binance")
    config = CcxtVenueConfig(venue="binance", exchanges={"Perp": "binanceusdm", "Spot": "binance"},
                             instruments=("binance:Perp:ETHUSDT",), credentials=Credentials(creds.api_key,
                                                                                            creds.secret),
                             leverage=3, enable_rate_limit=False)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    async with CcxtExchange(config, WallClock(), reports, session=exchange_fake.session()) as venue:
        client = venue.ccxt_clients["binanceusdm"]
        await client.create_order("ETH/USDT:USDT", "market", "sell", "2")
        exchange_fake.binance.settle_funding("ETHUSDT", D("0.0001"))
        poller = FundingPoller("binance", client, config.instruments, reports, WallClock(), since_ms=0)
        assert await poller.poll() == 1
        (paid,) = drain(reports)
        assert paid.change.tokens[0].delta == D("0.6")


async def test_a_payment_for_a_position_the_books_cannot_hold_is_refused_whole(exchange_fake: Any) -> None:
    """The change set names a venue the books do not keep: the ledger refuses it, unchanged (the positions actor
    then halts) — a funding report is never half-booked."""
    client = await opened(exchange_fake, "okx", "sell")
    exchange_fake.okx.settle_funding("ETH-USDT-SWAP", D("0.0001"))
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    await FundingPoller("okx", client, ["okx:Perp:ETHUSDT"], reports, WallClock(), since_ms=0).poll()
    (paid,) = drain(reports)
    ledger = Ledger(("binance",))
    with pytest.raises(LedgerError):
        ledger.apply(paid.change)
    assert ledger.sequence == 0
    assert Ledger(("okx",)).apply(paid.change).sequence == 1


@pytest.mark.parametrize("venue", list(VENUES))
async def test_the_current_and_next_funding_rate(exchange_fake: Any, venue: str) -> None:
    st = state(exchange_fake, venue)
    symbol = VENUES[venue][1]
    st.funding_rate[symbol] = D("-0.000125")
    client = await exchange_fake.client(VENUES[venue][0])
    await client.load_markets()
    now_ns = st.now_ms() * 1_000_000
    reading = await read_funding_rate(client, f"{venue}:Perp:ETHUSDT", now_ns)
    assert reading.rate == D("-0.000125")
    assert reading.settles_at_ns == st.next_funding_time_ms * 1_000_000
    if venue == "okx":  # OKX publishes the settlement after the next one (its rate is empty on the fake, as often)
        assert reading.next_settles_at_ns == (st.next_funding_time_ms + 8 * 3600 * 1000) * 1_000_000
    else:
        assert reading.next_settles_at_ns is None
    assert reading.next_rate is None
    message = reading.message(now_ns)
    assert isinstance(message, FundingRateReported)
    assert (message.instrument_id, message.rate, message.settles_at_ns) == (reading.instrument_id, reading.rate,
                                                                            reading.settles_at_ns)
