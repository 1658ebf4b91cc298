"""The ccxt adapter's pure parts: orders against a market's own rules (markets parsed by ccxt itself from Binance's
exchangeInfo payloads), instrument mapping, and credentials that never show the secret."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from daemon.domain.messages import Side
from daemon.ports import ExchangeVenue
from daemon.venues.ccxt_exchange import (
    CcxtExchange,
    CcxtVenueConfig,
    Credentials,
    MarketRules,
    ccxt_symbol,
)

# Binance's exchangeInfo entries, in the shape the venue sends (ETHUSDT perp: tick 0.01, step 0.001, min notional 20).
PERP = {"symbol": "ETHUSDT", "pair": "ETHUSDT", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDT",
        "marginAsset": "USDT", "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
        "quotePrecision": 8, "underlyingType": "COIN",
        "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "100000", "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "10000", "stepSize": "0.001"},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "2000", "stepSize": "0.001"},
                    {"filterType": "MIN_NOTIONAL", "notional": "20"}],
        "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"]}
SPOT = {"symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "baseAssetPrecision": 8, "quoteAsset": "USDT",
        "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "permissions": ["SPOT"],
        "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
                    {"filterType": "LOT_SIZE", "minQty": "0.0001", "maxQty": "9000", "stepSize": "0.0001"},
                    {"filterType": "NOTIONAL", "minNotional": "5", "applyMinToMarket": True,
                     "maxNotional": "9000000", "applyMaxToMarket": False, "avgPriceMins": 5}]}


def parsed(exchange: Any, raw: dict[str, Any]) -> dict[str, Any]:
    market: dict[str, Any] = exchange.parse_markets([raw])[0]
    return market


@pytest.fixture
def perp() -> MarketRules:
    return MarketRules.of(parsed(ccxt.binanceusdm(), PERP))


@pytest.fixture
def spot() -> MarketRules:
    exchange = ccxt.binance()
    exchange.options["crossMarginPairsData"] = []
    exchange.options["isolatedMarginPairsData"] = []
    return MarketRules.of(parsed(exchange, SPOT))


def test_rules_are_read_from_ccxt_markets(perp: MarketRules, spot: MarketRules) -> None:
    assert (perp.symbol, perp.amount_step, perp.price_tick, perp.min_amount, perp.min_cost) == \
        ("ETH/USDT:USDT", Decimal("0.001"), Decimal("0.01"), Decimal("0.001"), Decimal(20))
    assert perp.max_market_amount == Decimal(2000)
    assert (spot.symbol, spot.amount_step, spot.min_cost) == ("ETH/USDT", Decimal("0.0001"), Decimal(5))


def test_an_order_on_the_rules_passes(perp: MarketRules) -> None:
    assert perp.refusal(Decimal("0.010"), Decimal(3000), market_order=False) is None
    assert perp.refusal(Decimal("1.5"), None, market_order=True) is None


def test_a_quantity_off_the_lot_step_is_refused_not_rounded(perp: MarketRules, spot: MarketRules) -> None:
    reason = perp.refusal(Decimal("0.0105"), Decimal(3000), market_order=True)
    assert reason == "quantity 0.0105 is not a multiple of the lot step 0.001 on ETH/USDT:USDT"
    assert spot.refusal(Decimal("0.0105"), None, market_order=True) is None  # spot's step is finer
    assert "lot step 0.0001" in str(spot.refusal(Decimal("0.00005"), None, market_order=True))


def test_below_the_minimum_notional_is_refused(perp: MarketRules) -> None:
    reason = perp.refusal(Decimal("0.006"), Decimal(3000), market_order=False)
    assert reason == "notional 18.000 is below the minimum 20 on ETH/USDT:USDT"


def test_size_limits_are_refused(perp: MarketRules) -> None:
    assert "must be positive" in str(perp.refusal(Decimal(0), None, market_order=True))
    assert "above the maximum 2000 for a market order" in str(perp.refusal(Decimal(2001), None, market_order=True))
    assert perp.refusal(Decimal(2001), Decimal(3000), market_order=False) is None  # a limit may be larger


def test_a_cap_price_moves_to_the_tick_only_towards_a_better_fill(perp: MarketRules) -> None:
    assert perp.cap_price(Decimal("3015.004"), Side.BUY) == Decimal("3015.00")
    assert perp.cap_price(Decimal("3015.004"), Side.SELL) == Decimal("3015.01")
    assert perp.cap_price(Decimal("3015.01"), Side.SELL) == Decimal("3015.01")


def test_instruments_map_to_ccxt_symbols() -> None:
    assert ccxt_symbol("binance:Perp:ETHUSDT") == ("Perp", "ETH/USDT:USDT", "ETHUSDT")
    assert ccxt_symbol("binance:Spot:BTCUSDC") == ("Spot", "BTC/USDC", "BTCUSDC")
    with pytest.raises(ValueError, match="cannot map"):
        ccxt_symbol("binance:Option:ETHUSDT")


def test_credentials_never_show_the_secret() -> None:
    creds = Credentials("k" * 60 + "AB12", "s3cr3t-value", "pass-phrase")
    config = CcxtVenueConfig("binance", {"Perp": "binanceusdm"}, ("binance:Perp:ETHUSDT",), creds)
    for text in (repr(creds), repr(config), str(config)):
        assert "s3cr3t-value" not in text and "pass-phrase" not in text and "k" * 10 not in text
    assert creds.key_hint == "…AB12"


def _is_an_exchange_venue(adapter: CcxtExchange) -> ExchangeVenue:
    return adapter  # mypy checks that the adapter has the port's shape (interchangeable with the simulated one)


def test_ccxt_is_imported_only_under_daemon_venues() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*(root / "daemon").rglob("*.py"), *(root / "actors").rglob("*.py")]:
        if (root / "daemon" / "venues") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] == "ccxt"]
    assert not offenders


# OKX's instrument as the venue sends it: the swap counts contracts of 0.1 ETH, in lots of 0.01 contract.
OKX_SWAP = {"instType": "SWAP", "instId": "ETH-USDT-SWAP", "uly": "ETH-USDT", "instFamily": "ETH-USDT",
            "settleCcy": "USDT", "ctVal": "0.1", "ctMult": "1", "ctValCcy": "ETH", "ctType": "linear",
            "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.01", "state": "live", "lever": "100", "maxMktSz": "5000",
            "maxLmtSz": "1000000", "listTime": "1611916828000", "expTime": "", "baseCcy": "", "quoteCcy": "",
            "alias": "", "optType": "", "stk": "", "category": "1", "ruleType": "normal"}


def test_a_venue_that_counts_contracts_is_sized_in_the_base_asset() -> None:
    rules = MarketRules.of(parsed(ccxt.okx(), OKX_SWAP))
    assert (rules.contract_size, rules.amount_step, rules.min_amount) == \
        (Decimal("0.1"), Decimal("0.001"), Decimal("0.001"))
    assert rules.venue_amount(Decimal("0.25")) == Decimal("2.5")  # 0.25 ETH is 2.5 contracts
    assert rules.refusal(Decimal("0.25"), None, market_order=True) is None
    assert "lot step 0.001" in str(rules.refusal(Decimal("0.0005"), None, market_order=True))
