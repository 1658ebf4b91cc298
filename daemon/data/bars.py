"""Hourly market bars from recorded history, with an explicit decision for every missing value.

Each series the bar needs is looked up as of the bar's hour within its staleness limit. When that fails, the
policy decides, per series: no entry means fail (with a message naming the series and the gap), an entry
names the proxy series to use instead (e.g. OKX → Binance, where OKX has no data). Every stretch of proxied
hours is reported once, when it starts, so the run's log says exactly which numbers were borrowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from daemon.data.history import CATALOG, read_series
from daemon.data.series import Series, StaleData, iso
from daemon.data.timeparse import NS
from daemon.domain.bars import MarketBar
from daemon.errors import MissingDataError

HOUR_NS = 3600 * NS
FUNDING_HOURS = (0, 8, 16)

# Where a venue has no data, the same instrument on another venue is the nearest honest stand-in (DOMAIN §8
# #23: "OKX real where present, Binance proxy flagged elsewhere"). Binance's own paging holes borrow Bybit.
DEFAULT_PROXIES: dict[str, str] = {
    "perp:okx:ETH": "perp:binance:ETH", "funding:okx:ETH": "funding:binance:ETH",
    "perp:binance:ETH": "perp:bybit:ETH",
    "perp:okx:BTC": "perp:binance:BTC", "funding:okx:BTC": "funding:binance:BTC",
    "perp:binance:BTC": "perp:bybit:BTC",
    **{f"perp_{c}:okx:{a}": f"perp_{c}:binance:{a}" for c in ("high", "low") for a in ("ETH", "BTC")},
    **{f"perp_{c}:binance:{a}": f"perp_{c}:bybit:{a}" for c in ("high", "low") for a in ("ETH", "BTC")},
}


class MissingData(MissingDataError):
    """A value the run needs is missing and no proxy is configured for its series."""


@dataclass(frozen=True, slots=True)
class ProxyUsed:
    series: str
    proxy: str
    from_ns: int

    def __str__(self) -> str:
        return f"{self.series} missing from {iso(self.from_ns)}: using {self.proxy}"


class History:
    def __init__(self, data_dir: Path, proxies: Mapping[str, str] | None = None,
                 load: Callable[[Path, str], Series] = read_series, rewards: bool = False) -> None:
        self._dir = data_dir
        self._rewards = rewards  # price the reward tokens (only runs that receive them need the files)
        self._proxies = dict(DEFAULT_PROXIES if proxies is None else proxies)
        self._load = load
        self._series: dict[str, Series] = {}
        self._proxying: dict[str, int] = {}  # series → hour its current proxied stretch began
        self.proxy_events: list[ProxyUsed] = []

    @property
    def data_dir(self) -> Path:
        return self._dir

    @property
    def identity(self) -> str:
        """What, besides the files, decides the bars this history builds (for the bar cache's key)."""
        return f"proxies={sorted(self._proxies.items())!r}|rewards={self._rewards}"

    def series(self, key: str) -> Series:
        if key not in self._series:
            self._series[key] = self._load(self._dir, key)
        return self._series[key]

    def value(self, key: str, t_ns: int, exact: bool = False) -> float:
        """The value of `key` at `t_ns` (exactly at it for settlement events), or its proxy's, or MissingData."""
        max_age = 0 if exact else CATALOG[key].max_age_s if key in CATALOG else 0
        try:
            if key not in CATALOG:
                raise StaleData(key, t_ns, None, max_age)  # not recorded at all: only a proxy can answer
            value = self.series(key).at(t_ns, max_age)
        except StaleData as exc:
            proxy = self._proxies.get(key)
            if proxy is None:
                raise MissingData(f"{exc}; no proxy is configured for {key}") from None
            try:
                value = self.value(proxy, t_ns, exact)
            except MissingData as inner:
                raise MissingData(f"{exc}; and its proxy: {inner}") from None
            if key not in self._proxying:
                self._proxying[key] = t_ns
                self.proxy_events.append(ProxyUsed(key, proxy, t_ns))
            return value
        self._proxying.pop(key, None)
        return value

    def bars(self, start_ns: int, hours: int, venues: tuple[str, ...], btc: bool = True) -> Iterator[MarketBar]:
        start = start_ns // HOUR_NS * HOUR_NS
        for h in range(hours):
            yield self.bar(start + h * HOUR_NS, venues, btc)

    def bar(self, t: int, venues: tuple[str, ...], btc: bool = True) -> MarketBar:
        """One hour of market; BTC only when asked for (a strict run demands only what it trades)."""
        settlement = (t // HOUR_NS) % 24 in FUNDING_HOURS

        def d(value: float, places: str) -> Decimal:
            return Decimal(repr(value)).quantize(Decimal(places))

        def marks(asset: str) -> tuple[tuple[str, Decimal], ...]:
            return tuple((v, d(self.value(f"perp:{v}:{asset}", t), "0.01")) for v in venues)

        def funding(asset: str) -> tuple[tuple[str, Decimal], ...]:
            if not settlement:
                return ()
            return tuple((v, d(self.value(f"funding:{v}:{asset}", t, exact=True), "1e-10")) for v in venues)

        def ranges(asset: str) -> list[tuple[str, str, Decimal, Decimal]]:
            # The candle that opened an hour ago closed at t: its extremes are what the hour saw. A missing one is
            # only a report the less (these never move money), so it is skipped rather than failing the run.
            out = []
            for v in venues:
                try:
                    high = self.value(f"perp_high:{v}:{asset}", t - HOUR_NS, exact=True)
                    low = self.value(f"perp_low:{v}:{asset}", t - HOUR_NS, exact=True)
                except MissingData:
                    continue
                out.append((v, asset, d(high, "0.01"), d(low, "0.01")))
            return out

        def reward_prices() -> tuple[tuple[str, Decimal], ...]:
            # Priced only where the pools have data (EIGEN trades from 2024-10-05): a missing price here is
            # not a gap to fill but a token that did not exist yet, and no reward is paid in it before then.
            out = []
            for token in ("EIGEN", "ETHFI"):
                try:
                    out.append((token, d(self.series(f"spot:{token}/ETH").at(t, CATALOG[f"spot:{token}/ETH"].max_age_s),
                                         "1e-12")))
                except StaleData:
                    continue
            return tuple(out)

        return MarketBar(
            ts_ns=t,
            eth_spot=d(self.value("spot:ETH", t), "0.01"),
            perp_marks=marks("ETH"),
            funding=funding("ETH"),
            weeth_liquidity_index=d(self.value("aave:weETH:liquidity_index", t), "1e-15"),
            weth_borrow_index=d(self.value("aave:WETH:borrow_index", t), "1e-15"),
            usdt_liquidity_index=d(self.value("aave:USDT:liquidity_index", t), "1e-15"),
            weeth_eth_oracle=d(self.value("oracle:weETH/ETH", t), "1e-15"),
            gas_gwei=d(self.value("gas:gwei", t), "0.001"),
            weth_liquidity_index=d(self.value("aave:WETH:liquidity_index", t), "1e-15"),
            btc_spot=d(self.value("spot:BTC", t), "0.01") if btc else Decimal(0),
            btc_perp_marks=marks("BTC") if btc else (),
            btc_funding=funding("BTC") if btc else (),
            reward_prices_eth=reward_prices() if self._rewards else (),
            perp_ranges=tuple(ranges("ETH") + (ranges("BTC") if btc else [])),
        )
