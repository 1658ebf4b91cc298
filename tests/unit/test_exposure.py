from __future__ import annotations

from decimal import Decimal

import pytest

from daemon.domain.aave import atomic_entry, scaled_from_native
from daemon.domain.exposure import compute_exposure
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketState, MissingMarketData

D = Decimal
VENUES = ("binance", "bybit", "okx")


def market(**overrides: object) -> MarketState:
    values: dict[str, object] = dict(
        ts_ns=0, prices_usd={"ETH": D(3000), "BTC": D(60000)},
        perp_marks={("binance", "ETH"): D(3003), ("bybit", "ETH"): D(2998), ("okx", "ETH"): D(3001)},
        lst_rates={"weETH": D("1.05")}, liquidity_index={"weETH": D("1.02"), "USDT": D("1.1")},
        borrow_index={"WETH": D("1.1")},
    )
    values.update(overrides)
    return MarketState(**values)  # type: ignore[arg-type]


def ledger_with(*tokens: TokenChange, perps: tuple[PerpChange, ...] = ()) -> Ledger:
    ledger = Ledger(VENUES, gas_debt_allowed=True)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, tokens, perps))
    return ledger


def test_usdt_market_neutral_entry_is_delta_neutral_with_shorts_equal_to_aave_net_eth() -> None:
    m = market()
    equity_eth = D(50_000) / m.price_usd("ETH")
    entry = atomic_entry(equity_eth, D("0.909075"))
    o, lidx, bidx = m.lst_rate("weETH"), m.supply_index("weETH"), m.debt_index("WETH")
    a_weeth = scaled_from_native(entry.supplied / o, lidx)  # collateral worth `supplied` ETH
    debt = scaled_from_native(entry.borrowed, bidx)
    weights = {"binance": D("0.4"), "bybit": D("0.3"), "okx": D("0.3")}
    shorts = tuple(PerpChange(v, "ETHUSDT", -equity_eth * w, m.mark(v, "ETH")) for v, w in weights.items())
    ledger = ledger_with(TokenChange(WALLET, "aWeETH", a_weeth), TokenChange(WALLET, "variableDebtWETH", debt),
                         TokenChange(WALLET, "USDT", D(50_000)), perps=shorts)
    exposure = compute_exposure(ledger.snapshot(), m)
    eth = exposure.assets["ETH"]
    assert eth.onchain_native == pytest.approx(equity_eth, rel=D("1e-20"))
    assert eth.cex_native == -equity_eth
    assert abs(eth.net_native) < D("1e-20")
    assert eth.net_usd == eth.net_native * 3000
    assert exposure.hedge_notional_usd("ETH") == sum(abs(p.size) * p.mark for p in exposure.perps)


def test_the_seed_example_adds_up() -> None:
    # +3.104 ETH on chain and −8.222 ETH on the exchanges give −5.118 ETH (seed 000 / DOMAIN §4).
    ledger = ledger_with(TokenChange(WALLET, "ETH", D("3.104")),
                         perps=(PerpChange("binance", "ETHUSDT", D("-8.222"), D(3000)),))
    eth = compute_exposure(ledger.snapshot(), market()).assets["ETH"]
    assert (eth.onchain_native, eth.cex_native, eth.net_native) == (D("3.104"), D("-8.222"), D("-5.118"))


def test_stablecoins_carry_no_delta_and_lsts_count_through_their_oracle() -> None:
    ledger = ledger_with(TokenChange(WALLET, "USDT", D(1_000_000)), TokenChange("okx", "USDT", D(5_000)),
                         TokenChange(WALLET, "aUSDT", D(1_000)), TokenChange(WALLET, "weETH", D(10)))
    eth = compute_exposure(ledger.snapshot(), market()).assets["ETH"]
    assert eth.onchain_native == D("10.50")  # 10 weETH × 1.05 ETH/weETH, USDT contributes nothing
    assert eth.cex_native == 0


def test_aave_balances_are_scaled_and_valued_at_their_indexes() -> None:
    ledger = ledger_with(TokenChange(WALLET, "aWeETH", D(100)), TokenChange(WALLET, "variableDebtWETH", D(90)))
    eth = compute_exposure(ledger.snapshot(), market()).assets["ETH"]
    assert eth.onchain_native == D(100) * D("1.02") * D("1.05") - D(90) * D("1.1")


def test_gas_debt_is_a_small_short_eth_delta() -> None:
    ledger = ledger_with(TokenChange(WALLET, "ETH", D("-0.02")))
    assert compute_exposure(ledger.snapshot(), market()).assets["ETH"].onchain_native == D("-0.02")


def test_each_venue_is_marked_at_its_own_price_never_an_average() -> None:
    perps = tuple(PerpChange(v, "ETHUSDT", D(-1), D(3000)) for v in VENUES)
    exposure = compute_exposure(ledger_with(perps=perps).snapshot(), market())
    pnl = {p.venue: p.unrealized_pnl for p in exposure.perps}
    assert pnl == {"binance": D(-3), "bybit": D(2), "okx": D(-1)}


def test_a_missing_mark_is_an_error_not_a_guess() -> None:
    ledger = ledger_with(perps=(PerpChange("okx", "ETHUSDT", D(-1), D(3000)),))
    with pytest.raises(MissingMarketData, match="okx"):
        compute_exposure(ledger.snapshot(), market(perp_marks={("binance", "ETH"): D(3000)}))
