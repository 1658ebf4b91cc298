"""A venue's public market data through ccxt's REST API (`ccxt.async_support`): no keys, nothing signed.

One `CcxtMarketSource` per venue: a perp client (`binanceusdm`, `bybit` linear, `okx` swap) for the mark, index
and funding rate of each perpetual the config trades, and — on the venue the valuation reference is read from —
a spot client for its spot price. Markets are loaded for those market types only (Binance: one exchangeInfo call
each). Every number is read exactly, as a decimal string from the venue's own payload (`info`), checked against
the float ccxt parsed (`daemon.venues.ccxt_parse.exact`): a malformed answer is an error, never a zero price.

Errors are mapped once (`daemon.venues.ccxt_errors.map_error`, as reads): the caller (the live feed) degrades the
venue and keeps going. The streams (`daemon.venues.ccxt_market_stream`) use this source as their backstop.

Each venue's fields are exercised against the exchange fake, which serves Binance's, Bybit's (v5) and OKX's (v5)
public payloads (tests/integration/test_ccxt_market_stream.py, test_paper_daemon.py: configs/paper.yaml as shipped,
hedged on all three).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import ccxt.async_support as ccxt

from daemon.errors import VenueBadPayload
from daemon.venues.ccxt_errors import Call, map_error
from daemon.venues.ccxt_exchange import RATE_LIMITER
from daemon.venues.ccxt_parse import exact
from daemon.venues.quotes import PerpQuote, SpotQuote

NS_PER_MS = 1_000_000

# Our venue → (ccxt id, options) of its perp client and of its spot client.
CLIENTS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "binance": {"Perp": ("binanceusdm", {}),
                "Spot": ("binance", {"fetchMarkets": {"types": ["spot"]}, "fetchMargins": False,
                                     "defaultType": "spot"})},
    "bybit": {"Perp": ("bybit", {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"}),
              "Spot": ("bybit", {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"})},
    "okx": {"Perp": ("okx", {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"}),
            "Spot": ("okx", {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"})},
}
# Per venue, the raw payload's fields of `fetch_funding_rate`: (mark, funding rate, next settlement in ms). OKX's
# funding payload has no mark: it comes from `fetch_mark_price` (`markPx`).
_FUNDING_FIELDS = {
    "binance": ("markPrice", "lastFundingRate", "nextFundingTime"),
    "bybit": ("markPrice", "fundingRate", "nextFundingTime"),
    "okx": (None, "fundingRate", "fundingTime"),
}
_SPOT_FIELD = {"binance": "price", "bybit": "lastPrice", "okx": "last"}  # Binance: fetch_last_prices (ticker/price)


class CcxtMarketSource:
    """The public market data of one venue (`binance`, `bybit`, `okx`) for the assets named."""

    def __init__(self, venue: str, perp_symbols: Mapping[str, str], spot_symbols: Mapping[str, str] | None = None,
                 *, timeout_s: float = 10.0, session: aiohttp.ClientSession | None = None) -> None:
        if venue not in CLIENTS:
            raise ValueError(f"no market data client for venue {venue!r} (known: {', '.join(CLIENTS)})")
        self.venue = venue
        self._perp_symbols = dict(perp_symbols)  # asset → ccxt symbol: {"ETH": "ETH/USDT:USDT"}
        self._spot_symbols = dict(spot_symbols or {})
        self._perp = self._client("Perp", timeout_s, session)
        self._spot = self._client("Spot", timeout_s, session) if self._spot_symbols else None

    def _client(self, kind: str, timeout_s: float, session: aiohttp.ClientSession | None) -> Any:
        exchange_id, options = CLIENTS[self.venue][kind]
        config: dict[str, Any] = {"timeout": int(timeout_s * 1000), "enableRateLimit": True, **RATE_LIMITER,
                                  "options": {"fetchCurrencies": False, **options}}
        if session is not None:
            config["session"] = session  # a redirected session (tests, demos); ccxt does not close it
        client = getattr(ccxt, exchange_id)(config)
        if session is not None:
            client.timeout_on_exit = 0  # its exit pause is for a session it made (see ccxt_exchange.CcxtExchange)
        client.has["fetchCurrencies"] = False  # public data only: no currencies (Bybit and OKX ignore the option)
        return client

    @property
    def assets(self) -> tuple[str, ...]:
        return tuple(self._perp_symbols)

    async def close(self) -> None:
        for client in (self._perp, self._spot):
            if client is not None:
                await client.close()

    async def perp(self, asset: str, now_ns: int) -> PerpQuote:
        """The perp's mark and the funding rate of its next settlement (raises a `VenueError`)."""
        symbol = self._perp_symbols[asset]
        mark_field, rate_field, next_field = _FUNDING_FIELDS[self.venue]
        try:
            if mark_field is None:
                funding, marked = await asyncio.gather(self._perp.fetch_funding_rate(symbol),
                                                       self._perp.fetch_mark_price(symbol))
                mark = exact(_info(marked).get("markPx"), f"{self.venue} {symbol} mark", marked.get("markPrice"))
            else:
                funding = await self._perp.fetch_funding_rate(symbol)
                mark = exact(_info(funding).get(mark_field), f"{self.venue} {symbol} mark", funding.get("markPrice"))
        except Exception as exc:
            raise self._error(exc, self._perp) from None
        info = _info(funding)
        rate = exact(info.get(rate_field), f"{self.venue} {symbol} funding rate", funding.get("fundingRate"))
        next_ms = info.get(next_field)
        settles = int(next_ms) * NS_PER_MS if isinstance(next_ms, str | int) and str(next_ms).isdigit() else None
        return PerpQuote(asset, mark, rate, settles or None, _ts_ns(funding.get("timestamp"), now_ns))

    async def spot(self, asset: str, now_ns: int) -> SpotQuote:
        """The spot pair's last price (raises a `VenueError`)."""
        assert self._spot is not None, "no spot symbols were given"
        symbol = self._spot_symbols[asset]
        try:
            if self.venue == "binance":
                ticker = (await self._spot.fetch_last_prices([symbol]))[symbol]
                unified = ticker.get("price")
            else:
                ticker = await self._spot.fetch_ticker(symbol)
                unified = ticker.get("last")
        except Exception as exc:
            raise self._error(exc, self._spot) from None
        price = exact(_info(ticker).get(_SPOT_FIELD[self.venue]), f"{self.venue} {symbol} spot price", unified)
        return SpotQuote(asset, price, _ts_ns(ticker.get("timestamp"), now_ns))

    def _error(self, exc: Exception, client: Any) -> Exception:
        if isinstance(exc, KeyError | TypeError | AttributeError):  # a payload without the structure ccxt expects
            return VenueBadPayload(f"{self.venue}: unexpected market data payload ({type(exc).__name__}: {exc})")
        return map_error(exc, venue=client.id, call=Call.READ, headers=getattr(client, "last_response_headers", None))


def _info(structure: Any) -> dict[str, Any]:
    info = structure.get("info") if isinstance(structure, dict) else None
    return info if isinstance(info, dict) else {}


def _ts_ns(ts_ms: object, now_ns: int) -> int:
    """The venue's timestamp, never later than our clock (a venue's clock ahead of ours must not age the rest)."""
    if isinstance(ts_ms, int | float) and ts_ms > 0:
        return min(int(ts_ms) * NS_PER_MS, now_ns)
    return now_ns
