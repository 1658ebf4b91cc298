"""Golden tests of `daemon.venues.ccxt_parse`: ccxt's recorded venue answers (tests/fixtures/ccxt_static) go through
ccxt's own methods (its request building and parsers, with the HTTP call replaced by the recording, as ccxt's static
tests do), then through our mapping; the values asserted are the raw payload's strings, exactly."""

from __future__ import annotations

import copy
from decimal import Decimal

import ccxt
import ccxt.pro
import pytest

from daemon.domain.ids import ClientOrderId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.ledger import Reason, TokenChange
from daemon.domain.messages import FillReport, OrderStatusReport, Side
from daemon.errors import VenueBadPayload
from daemon.venues.ccxt_parse import (
    PositionState,
    account_report,
    contract_size,
    exact,
    instrument,
    parse_ack,
    parse_balances,
    parse_funding,
    parse_order,
    parse_position,
    parse_trade,
)
from daemon.venues.client_ids import to_venue
from tests.unit.ccxt_static import market, replay

D = Decimal
BINANCE_SPOT = [("LTC/USDT", "LTCUSDT")]
BINANCE_PERP = [("BTC/USDT:USDT", "BTCUSDT"), ("LTC/USDT:USDT", "LTCUSDT")]
BYBIT = [("LTC/USDT:USDT", "LTCUSDT"), ("BTC/USDT:USDT", "BTCUSDT"), ("BTC/USDT", "BTCUSDT"), ("ETH/USDT", "ETHUSDT"),
         ("LTC/USDT", "LTCUSDT")]
OKX = [("LTC/USDT", "LTC-USDT"), ("LTC/USDT:USDT", "LTC-USDT-SWAP", "1"), ("ADA/USDT:USDT", "ADA-USDT-SWAP", "100")]


# --- trades ------------------------------------------------------------------------------------------------------


def test_binance_perp_trade() -> None:
    [unified], ex, _ = replay(ccxt.binanceusdm, "fetchMyTrades", 1, BINANCE_PERP)
    assert isinstance(unified["amount"], float)  # what ccxt gives: the reason we read the payload
    trade = parse_trade(unified, ex.id)
    assert trade is not None
    assert (trade.trade_id, trade.venue_order_id, trade.instrument_id, trade.side) == (
        "272536245", "3524852987", "binance:Perp:BTCUSDT", Side.BUY)
    assert (trade.quantity, trade.price, trade.fee, trade.fee_currency) == (D("0.010"), D("36567.10"), D("0.14626840"),
                                                                            "USDT")
    assert trade.ts_event == 1699972836419 * 10**6 and trade.venue_client_id is None  # Binance REST: look it up
    ours = ClientOrderId("r12i494000-3-1")
    report = trade.report("binance", 5, venue_client_id=to_venue(ours, "binanceusdm"))
    assert report == FillReport(VenueId("binance"), TradeId("272536245"), ours, VenueOrderId("3524852987"),
                                InstrumentId("binance:Perp:BTCUSDT"), Side.BUY, D("0.010"), D("36567.10"),
                                D("0.14626840"), "USDT", 1699972836419 * 10**6, 5)
    assert trade.report("binance", 5) is None  # no client id: not known to be ours
    named = parse_trade(unified, ex.id, venue="binance-main")  # the ledger's name for the account, if not "binance"
    assert named is not None and named.instrument_id == "binance-main:Perp:BTCUSDT"


def test_binance_spot_trade_sell() -> None:
    [unified], ex, _ = replay(ccxt.binance, "fetchMyTrades", 0, BINANCE_SPOT)
    trade = parse_trade(unified, ex.id)
    assert trade is not None
    assert (trade.instrument_id, trade.side, trade.quantity, trade.price, trade.fee, trade.fee_currency) == (
        "binance:Spot:LTCUSDT", Side.SELL, D("0.20000000"), D("69.63000000"), D("0.01392600"), "USDT")


def test_binance_stream_trade_carries_our_client_id() -> None:
    ours = ClientOrderId("flatten-1780000000000000000-1-2")
    event = {"s": "ETHUSDT", "c": to_venue(ours, "binanceusdm"), "S": "SELL", "o": "MARKET", "f": "GTC", "q": "0.020",
             "p": "0", "ap": "3012.35", "sp": "0", "x": "TRADE", "X": "FILLED", "i": 8886774, "l": "0.020",
             "z": "0.020", "L": "3012.35", "n": "0.02409880", "N": "USDT", "T": 1780000000123, "t": 7771, "b": "0",
             "a": "0", "m": False, "R": True, "wt": "CONTRACT_PRICE", "ot": "MARKET", "ps": "BOTH", "cp": False,
             "rp": "1.20", "pP": False, "si": 0, "ss": 0}
    exchange = ccxt.pro.binanceusdm()
    exchange.set_markets([market("ETH/USDT:USDT", "ETHUSDT")])
    unified = exchange.parse_ws_trade(event)  # what watch_my_trades resolves with
    trade = parse_trade(unified, "binanceusdm")
    assert trade is not None
    report = trade.report("binance", 9)
    assert report is not None and report.client_order_id == ours
    assert (report.trade_id, report.venue_order_id, report.quantity, report.price, report.fee) == (
        "7771", "8886774", D("0.020"), D("3012.35"), D("0.02409880"))
    order = parse_order(exchange.parse_ws_order(event), "binanceusdm")
    assert (order.client_order_id, order.status, order.amount, order.filled) == (ours, "filled", D("0.020"),
                                                                                  D("0.020"))


def test_bybit_spot_fee_in_the_base_asset() -> None:
    [unified], ex, _ = replay(ccxt.bybit, "fetchMyTrades", 0, BYBIT)
    trade = parse_trade(unified, ex.id)
    assert trade is not None
    assert (trade.instrument_id, trade.side, trade.quantity, trade.price) == ("bybit:Spot:BTCUSDT", Side.BUY,
                                                                              D("0.000336"), D("29708.7"))
    assert (trade.fee, trade.fee_currency) == (D("0.000000336"), "BTC")  # Bybit charges a spot buy in what it buys
    assert trade.venue_client_id == "1550857400247129600" and trade.report("bybit", 0) is None  # not ours
    [unified], ex, _ = replay(ccxt.bybit, "fetchMyTrades", 2, BYBIT)
    trade = parse_trade(unified, ex.id)
    assert trade is not None and (trade.fee, trade.fee_currency) == (D("0.000001"), "ETH")


def test_bybit_perp_trade_and_funding_execution() -> None:
    [unified], ex, _ = replay(ccxt.bybit, "fetchMyTrades", 3, BYBIT)
    trade = parse_trade(unified, ex.id)
    assert trade is not None
    assert (trade.instrument_id, trade.quantity, trade.price, trade.fee, trade.fee_currency) == (
        "bybit:Perp:LTCUSDT", D("0.1"), D("85.11"), D("0.00468105"), "USDT")
    [funding], ex, _ = replay(ccxt.bybit, "fetchMyTrades", 1, BYBIT)
    assert funding["info"]["execType"] == "Funding" and parse_trade(funding, ex.id) is None  # not a fill


def test_okx_fee_sign_and_our_client_id() -> None:
    [unified], ex, _ = replay(ccxt.okx, "fetchMyTrades", 0, OKX)
    trade = parse_trade(unified, ex.id)
    assert trade is not None
    assert (trade.trade_id, trade.venue_order_id, trade.instrument_id, trade.side) == (
        "56181695", "639895991331667968", "okx:Spot:LTCUSDT", Side.BUY)
    # OKX writes the fee it took as negative ("-0.0001"): paid, so positive in the books; charged in LTC.
    assert (trade.quantity, trade.price, trade.fee, trade.fee_currency) == (D("0.1"), D("67.84"), D("0.0001"), "LTC")
    assert trade.report("okx", 0) is None  # e847386590ce4dBC…: ccxt's broker id, not ours
    ours = ClientOrderId("r3i494001-17-4")
    raw = copy.deepcopy(unified)
    raw["clientOrderId"] = raw["info"]["clOrdId"] = to_venue(ours, "okx")
    mine = parse_trade(raw, "okx")
    assert mine is not None and mine.report("okx", 0) is not None
    assert mine.report("okx", 0).client_order_id == ours  # type: ignore[union-attr]


def test_okx_swap_sizes_are_contracts_times_ct_val() -> None:
    unified, ex, _ = replay(ccxt.okx, "fetchOpenOrders", 0, OKX)
    [order] = unified
    size = contract_size(ex.market(order["symbol"]))
    assert size == D("100") and order["amount"] == 50  # 50 contracts of 100 ADA
    state = parse_order(order, ex.id, size)
    assert (state.status, state.amount, state.filled, state.venue_order_id) == ("accepted", D("5000"), D("0"),
                                                                                "645348448086081536")


# --- orders --------------------------------------------------------------------------------------------------------


def test_orders_of_the_three_venues() -> None:
    order, ex, _ = replay(ccxt.binance, "fetchOrder", 0, BINANCE_SPOT)
    state = parse_order(order, ex.id)
    assert (state.status, state.amount, state.filled, state.venue_client_id) == (
        "filled", D("0.10000000"), D("0.10000000"), "x-R4BD3S825806ed40c861260428a48c")
    assert state.client_order_id is None and state.report("binance", 0) is None
    order, ex, _ = replay(ccxt.binanceusdm, "fetchOpenOrder", 0, BINANCE_PERP)
    state = parse_order(order, ex.id)
    assert (state.status, state.amount, state.filled, state.ts_event) == ("accepted", D("0.200"), D("0.000"),
                                                                          1707907323991 * 10**6)
    order, ex, _ = replay(ccxt.bybit, "fetchOpenOrder", 0, BYBIT)
    state = parse_order(order, ex.id)
    assert (state.status, state.amount, state.filled) == ("accepted", D("0.001"), D("0"))
    order, ex, _ = replay(ccxt.okx, "fetchOrder", 0, OKX)
    state = parse_order(order, ex.id)
    assert (state.status, state.amount, state.filled, state.venue_order_id) == ("filled", D("0.1"), D("0.1"),
                                                                                "1339107111507525632")


def test_an_acknowledgement_is_accepted_with_the_venue_order_id() -> None:
    order, ex, _ = replay(ccxt.bybit, "createOrder", 0, BYBIT)
    assert order["status"] is None
    ours = ClientOrderId("i494000-1-1")
    order["clientOrderId"] = to_venue(ours, "bybit")
    assert parse_ack(order, ex.id, 77) == OrderStatusReport(VenueId("bybit"), ours, order["id"], "accepted", "", 77, 77)


# --- positions, balances, the account -----------------------------------------------------------------------------


def test_binance_position_with_the_venues_maintenance_margin() -> None:
    [unified], ex, _ = replay(ccxt.binanceusdm, "fetchPositions", 0, BINANCE_PERP)
    assert unified["maintenanceMargin"] == 2.43009666712  # ccxt recomputes it from its bracket table
    assert parse_position(unified, ex.id) == PositionState("BTCUSDT", D("0.009"), D("67445.9"), D("67502.68519858"),
                                                           D("64846.98753790"), D("2.43009666"), D("0.51106678"))
    [unified], ex, _ = replay(ccxt.binanceusdm, "fetchPositions", 2, BINANCE_PERP)  # the account endpoint
    position = parse_position(unified, ex.id)
    assert position is not None and (position.quantity, position.maintenance_margin) == (D("0.009"), D("2.43022194"))


def test_short_positions_are_negative() -> None:
    [unified], ex, _ = replay(ccxt.binanceusdm, "fetchPositions", 1, BINANCE_PERP)
    short = copy.deepcopy(unified)
    short["info"]["positionAmt"] = "-0.009"
    position = parse_position(short, ex.id)
    assert position is not None and position.quantity == D("-0.009")
    [unified], ex, _ = replay(ccxt.bybit, "fetchPositions", 0, BYBIT)
    assert parse_position(unified, ex.id) == PositionState("LTCUSDT", D("1.2"), D("64.59947917"), D("71.1"), None,
                                                           D("0.81072399"), D("7.800625"))
    short = copy.deepcopy(unified)
    short["info"]["side"] = "Sell"
    assert parse_position(short, ex.id).quantity == D("-1.2")  # type: ignore[union-attr]
    [unified], ex, _ = replay(ccxt.okx, "fetchPositions", 0, OKX)  # long/short mode: `posSide` says which
    assert unified["side"] == "long" and parse_position(unified, ex.id).quantity == D("1")  # type: ignore[union-attr]
    short = copy.deepcopy(unified)
    short["info"]["posSide"] = "short"
    assert parse_position(short, ex.id).quantity == D("-1")  # type: ignore[union-attr]
    net = copy.deepcopy(unified)
    net["info"].update(posSide="net", pos="-3")
    net["contracts"] = 3.0
    assert parse_position(net, ex.id, D("0.1")).quantity == D("-0.3")  # type: ignore[union-attr]


def test_balances_of_the_three_venues() -> None:
    spot, ex, _ = replay(ccxt.binance, "fetchBalance", 0, BINANCE_SPOT)
    assert parse_balances(spot, ex.id) == {"BTC": D(0), "LTC": D("0.91974100"), "ETH": D("0.02229833")}
    futures, ex, _ = replay(ccxt.binanceusdm, "fetchBalance", 1, BINANCE_PERP)
    assert parse_balances(futures, ex.id) == {"USDT": D("31.02261200")}
    unified, ex, _ = replay(ccxt.bybit, "fetchBalance", 0, BYBIT)
    bybit = parse_balances(unified, ex.id)
    assert bybit["USDT"] == D("3322.25896609") and bybit["USDC"] == D("5848.20013918") and len(bybit) == 7
    trading, ex, _ = replay(ccxt.okx, "fetchBalance", 1, OKX)
    okx = parse_balances(trading, ex.id)
    assert okx["BTC"] == D("1.06126645222") and okx["USDT"] == D("0.000258796")  # cashBal, not the float
    funding, ex, _ = replay(ccxt.okx, "fetchBalance", 0, OKX)
    assert parse_balances(funding, ex.id) == {"TUSD": D("100")}


def test_account_report_sums_the_wallets_and_keeps_open_perps() -> None:
    spot, _, _ = replay(ccxt.binance, "fetchBalance", 0, BINANCE_SPOT)
    futures, _, _ = replay(ccxt.binanceusdm, "fetchBalance", 1, BINANCE_PERP)
    [unified], _, _ = replay(ccxt.binanceusdm, "fetchPositions", 0, BINANCE_PERP)
    position = parse_position(unified, "binanceusdm")
    assert position is not None
    report = account_report("binance", [parse_balances(spot, "binance"), parse_balances(futures, "binanceusdm"),
                                            {"USDT": D("1.5")}], [position], 10, 11)
    assert report.account == "binance"
    assert report.balances == (("ETH", D("0.02229833")), ("LTC", D("0.91974100")), ("USDT", D("32.52261200")))
    assert report.perps == (("BTCUSDT", D("0.009")),) and (report.ts_event, report.ts_recv) == (10, 11)


# --- funding -------------------------------------------------------------------------------------------------------


def test_binance_funding_income() -> None:
    [entry], ex, _ = replay(ccxt.binanceusdm, "fetchFundingHistory", 0, BINANCE_PERP)
    payment = parse_funding(entry, ex.id)
    assert (payment.payment_id, payment.instrument, payment.asset, payment.amount) == (
        "8082457372019390060", "BTCUSDT", "USDT", D("-0.04618913"))  # paid
    event = payment.balances_changed(99)
    assert event.report_id == "funding-8082457372019390060" and event.change.reason is Reason.FUNDING_PAYMENT
    assert event.change.tokens == (TokenChange("binance", "USDT", D("-0.04618913")),)
    assert (event.ts_event, event.ts_recv) == (1707465600000 * 10**6, 99)


def test_bybit_funding_sign_rate_and_position() -> None:
    entries, ex, _ = replay(ccxt.bybit, "fetchFundingHistory", 0, BYBIT)
    paid, received = (parse_funding(e, ex.id) for e in entries)
    # A long (side Buy) pays at a positive rate, receives at a negative one; Bybit's execFee is + when paid.
    assert (paid.amount, paid.rate, paid.position) == (D("-0.0007797"), D("0.0001"), D("0.1"))
    assert (received.amount, received.rate, received.payment_id) == (D("0.00708126"), D("-0.000881"),
                                                                     "89102b18-96c4-42d2-bc26-131699036635")


def test_okx_funding_bill() -> None:
    # The bill as ccxt's okx.fetch_funding_history documents it (no recorded response for it upstream).
    bill = {"bal": "0.0242946200998573", "balChg": "0.0000148752712240", "billId": "377970609204146187",
            "ccy": "ETH", "execType": "", "fee": "0", "from": "", "instId": "ETH-USDT-SWAP", "instType": "SWAP",
            "mgnMode": "cross", "notes": "", "ordId": "", "pnl": "0.000014875271224", "posBal": "0", "posBalChg": "0",
            "subType": "174", "sz": "9", "to": "", "ts": "1636387215588", "type": "8"}
    exchange = ccxt.okx({"apiKey": "k", "secret": "s", "password": "p"})
    exchange.set_markets([market("ETH/USDT:USDT", "ETH-USDT-SWAP", "0.1")])
    exchange.fetch = lambda *args, **kwargs: {"code": "0", "data": [bill], "msg": ""}
    [entry] = exchange.fetch_funding_history("ETH/USDT:USDT")
    payment = parse_funding(entry, "okx")
    assert (payment.amount, payment.asset, payment.payment_id, payment.instrument) == (
        D("0.0000148752712240"), "ETH", "377970609204146187", "ETHUSDT")


# --- never through float; a disagreement with ccxt is refused ------------------------------------------------------


def test_exact_refuses_floats_and_disagreements() -> None:
    assert exact("0.1", "x", 0.1) == D("0.1") and exact(3, "x") == D(3)
    for bad in (0.1, True, None, "abc", "NaN", "Infinity"):
        with pytest.raises(VenueBadPayload):
            exact(bad, "x")
    with pytest.raises(VenueBadPayload, match="ccxt read"):
        exact("0.1", "x", 0.2)


def test_a_payload_that_disagrees_with_ccxt_is_not_booked() -> None:
    [unified], ex, _ = replay(ccxt.binanceusdm, "fetchMyTrades", 1, BINANCE_PERP)
    tampered = copy.deepcopy(unified)
    tampered["info"]["qty"] = "0.011"  # a field read from the wrong place would look like this
    with pytest.raises(VenueBadPayload, match="ccxt read"):
        parse_trade(tampered, ex.id)


def test_instrument_names() -> None:
    assert instrument("ETH/USDT:USDT") == ("Perp", "ETHUSDT") and instrument("ETH/USDT") == ("Spot", "ETHUSDT")
    with pytest.raises(VenueBadPayload):
        instrument("BTC/USDT:USDT-251226")  # a dated future


def test_okx_stream_fill_fee_sign_and_contracts() -> None:
    """An OKX `orders` channel update with a fill, through ccxt.pro's own handler (`watch_my_trades`): its
    `fillFee` is negative when charged, and ccxt keeps that sign there (it negates the REST `fee`)."""
    ours = ClientOrderId("r7i494002-5-2")
    update = {"accFillSz": "3", "amendResult": "", "avgPx": "3010.5", "cTime": "1780000000000", "category": "normal",
              "ccy": "", "clOrdId": to_venue(ours, "okx"), "code": "0", "execType": "T", "fee": "-0.4516",
              "feeCcy": "USDT", "fillFee": "-0.15052", "fillFeeCcy": "USDT", "fillNotionalUsd": "", "fillPx": "3010.4",
              "fillSz": "1", "fillTime": "1780000000123", "instId": "ETH-USDT-SWAP", "instType": "SWAP", "lever": "3",
              "msg": "", "notionalUsd": "903", "ordId": "370257534141235201", "ordType": "market", "pnl": "0",
              "posSide": "net", "px": "", "rebate": "0", "rebateCcy": "USDT", "reqId": "", "side": "sell",
              "slOrdPx": "", "slTriggerPx": "", "state": "partially_filled", "sz": "5", "tag": "", "tdMode": "cross",
              "tgtCcy": "", "tpOrdPx": "", "tpTriggerPx": "", "tradeId": "99887766", "uTime": "1780000000123"}
    exchange = ccxt.pro.okx()
    exchange.set_markets([market("ETH/USDT:USDT", "ETH-USDT-SWAP", "0.1")])
    unified = exchange.order_to_trade(exchange.parse_order(update))
    assert unified["fee"]["cost"] == -0.15052  # ccxt's sign, the venue's
    trade = parse_trade(unified, "okx", contract_size(exchange.market("ETH/USDT:USDT")))
    assert trade is not None
    report = trade.report("okx", 1)
    assert report is not None and report.client_order_id == ours
    assert (report.trade_id, report.side, report.quantity, report.price, report.fee, report.fee_currency) == (
        "99887766", Side.SELL, D("0.1"), D("3010.4"), D("0.15052"), "USDT")  # 1 contract of 0.1 ETH; fee paid
    order = parse_order(exchange.parse_order(update), "okx", D("0.1"))
    assert (order.status, order.amount, order.filled, order.client_order_id) == ("accepted", D("0.5"), D("0.3"), ours)


def test_a_fill_without_its_fee_is_refused() -> None:
    [unified], ex, _ = replay(ccxt.bybit, "fetchMyTrades", 3, BYBIT)
    fast = copy.deepcopy(unified)
    del fast["info"]["execFee"]  # Bybit's `execution.fast` topic carries no fee
    with pytest.raises(VenueBadPayload, match="no execFee"):
        parse_trade(fast, ex.id)
