from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.domain.booking import fill_change_set
from daemon.domain.exposure import compute_exposure
from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, LedgerError, PerpPosition, Reason, TokenChange
from daemon.domain.market import MarketBoard
from daemon.domain.messages import OracleRateReported, OrderFilled, PriceTicked, Side
from daemon.domain.pnl import nav_usd

D = Decimal


def test_size_weighted_entry_and_realized_pnl_on_reduction_and_flip() -> None:
    p = PerpPosition()
    assert p.apply(D(-2), D(3000)) == 0
    assert p.apply(D(-1), D(3300)) == 0
    assert p.average_price == D(3100)  # (2×3000 + 1×3300) / 3, not the last fill's price
    assert p.apply(D(1), D(3000)) == D(100)  # a short bought back 100 lower
    assert (p.quantity, p.average_price) == (D(-2), D(3100))
    assert p.apply(D(3), D(3200)) == D(-200)  # closes 2 at a 100 loss each, flips long 1 at 3200
    assert (p.quantity, p.average_price, p.realized_pnl) == (D(1), D(3200), D(-100))


qty = st.decimals(min_value=D("-5"), max_value=D("5"), places=3).filter(lambda q: q != 0)
px = st.decimals(min_value=D("1000"), max_value=D("5000"), places=2)


@given(st.lists(st.tuples(qty, px), min_size=1, max_size=30), px)
def test_perp_pnl_is_conserved_exactly(trades: list[tuple[Decimal, Decimal]], mark: Decimal) -> None:
    """Realized + unrealized P&L equals the cash-flow P&L of the trades, to the last digit."""
    p = PerpPosition()
    cash = D(0)
    for q, price in trades:
        p.apply(q, price)
        cash -= q * price
    assert p.realized_pnl + p.unrealized(mark) == cash + p.quantity * mark


def fill(instrument: str, side: Side, quantity: str, price: str, fee: str = "0", trade: str = "t") -> OrderFilled:
    return OrderFilled(VenueId(instrument.split(":")[0]), TradeId(trade), ClientOrderId("c"), InstrumentId(instrument),
                       side, D(quantity), D(price), D(fee), "USDT", 0, 0)


def test_fills_book_atomically_and_value_through_the_market_board() -> None:
    ledger = Ledger(("binance", "bybit"))
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange("binance", "USDT", D(60_000)),
                                                        TokenChange("bybit", "USDT", D(20_000)))))
    ledger.apply(fill_change_set(fill("binance:Spot:ETHUSDT", Side.BUY, "10", "3000", fee="3")))
    ledger.apply(fill_change_set(fill("bybit:Perp:ETHUSDT", Side.SELL, "10", "3010", fee="1.5")))
    board = MarketBoard()
    for message in (PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3100), 1, 1),
                    PriceTicked(InstrumentId("bybit:Perp:ETHUSDT"), D(3105), 1, 1),
                    OracleRateReported("weETH/ETH", D("1.05"), 1, 1)):
        board.update(message)
    market = board.state()
    assert market.mark("bybit", "ETH") == D(3105) and market.lst_rate("weETH") == D("1.05")
    assert compute_exposure(ledger.snapshot(), market).net_delta("ETH") == 0
    # 80,000 − 4.5 fees; +1,000 on spot; −950 on the short (basis narrowed by 5 × 10)
    assert nav_usd(ledger.snapshot(), market) == D(80_000) - D("4.5") + D(1_000) - D(950)


def test_a_spot_buy_the_account_cannot_pay_for_is_refused_whole() -> None:
    ledger = Ledger(("binance",))
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (TokenChange("binance", "USDT", D(100)),)))
    with pytest.raises(LedgerError, match="binance:USDT"):
        ledger.apply(fill_change_set(fill("binance:Spot:ETHUSDT", Side.BUY, "1", "3000")))
    assert ledger.balance("binance", "ETH") == 0 and ledger.balance("binance", "USDT") == 100
    assert ledger.balance(WALLET, "USDT") == 0
