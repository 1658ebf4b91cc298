"""Hourly market bars from recorded history, with an explicit decision for every missing value.

Each series the bar needs is looked up as of the bar's hour within its staleness limit. When that fails, the
policy decides, per series: no entry means fail (with a message naming the series and the gap), an entry
names the proxy series to use instead (e.g. OKX → Binance, where OKX has no data). A value held over from an
earlier hour (within the staleness limit) gives way to the proxy's value recorded at the hour itself, where
there is one: a mark frozen on one venue while the others move is a basis that never existed. Every stretch of
proxied hours is reported once, when it starts, so the run's log says exactly which numbers were borrowed.
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
from daemon.errors import DataError, MissingDataError

HOUR_NS = 3600 * NS
FUNDING_HOURS = (0, 8, 16)
FUNDING_VENUES = ("binance", "bybit", "okx")  # every venue whose funding history is catalogued

# The one ETH/USD price every ETH holding is valued at (`daemon.domain.pnl`). The perps' own index (a composite
# of CEX spot prices) would be the natural reference: it prices the hedge, and the venues mark to it. It is not in
# the recorded history, so the most liquid CEX spot there stands in for it: Bybit ETHUSDT, complete over the
# common window, within 4 bp (sd) of the three perps with 1-3 bp hourly changes. Rejected: the Uniswap v3
# WETH/USDT pool (thin: 20 bp from the perps, reverting next hour, lag-1 autocorrelation -0.49 — it stays the
# price on-chain swaps execute at, `eth_spot`), and AAVE's WETH/USD oracle file (daily values interpolated to
# hours, so it both lags and looks ahead: 150 bp from the perps). AAVE's own LST/ETH oracle still prices the
# collateral in ETH; this reference only turns ETH into USD.
ETH_REFERENCE = "spot:bybit:ETH"

# Where a venue has no data, the same instrument on another venue is the nearest honest stand-in (DOMAIN §8
# #23: "OKX real where present, Binance proxy flagged elsewhere"). Binance's own paging holes borrow Bybit.
DEFAULT_PROXIES: dict[str, str] = {
    "perp:okx:ETH": "perp:binance:ETH", "funding:okx:ETH": "funding:binance:ETH",
    ETH_REFERENCE: "perp:bybit:ETH",  # the same venue's perp is the nearest liquid stand-in for its spot
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


@dataclass(frozen=True, slots=True)
class DuplicatesResolved:
    """A series whose duplicated timestamps carry different values, and the rule that chose between them (reported
    once per series, at the first timestamp it decided)."""

    series: str
    timestamps: int  # how many of the series' timestamps carry conflicting values (in the whole file)
    rule: str
    from_ns: int

    def __str__(self) -> str:
        return (f"{self.series}: {self.timestamps} timestamps carry conflicting values from {iso(self.from_ns)}: "
                f"{self.rule}")


# OKX's ETH funding file has every settlement from 2025-03-29 00:00 to 2025-06-09 16:00 twice (210), with two
# different rates. Where OKX has one row its rate is within 5.1e-5 (mean absolute difference) of Binance's; at the
# duplicates one candidate is within 3.9e-5 of the other venues' and the other 3.3e-4 away (64 of them the flat
# 0.0001, the rest down to -5.5e-4 while Binance and Bybit paid about +4e-5). So the rate kept is the one nearest
# the median of the other venues' rates for the same instrument at the same settlement (taking the first row
# picked the outlier at 105 of the 210, about -$387 of funding); with no other venue recorded, the one nearest the
# series' previous settlement.
DUPLICATE_RULE = "the rate nearest the other venues' median at the same settlement (else the previous settlement's)"


class History:
    def __init__(self, data_dir: Path, proxies: Mapping[str, str] | None = None,
                 load: Callable[[Path, str], Series] = read_series, rewards: bool = False, lst: str = "weETH") -> None:
        self._dir = data_dir
        self._lst = lst  # the LST the run stakes: its oracle and AAVE index are the only LST series read
        self._rewards = rewards  # price the reward tokens (only runs that receive them need the files)
        self._proxies = dict(DEFAULT_PROXIES if proxies is None else proxies)
        self._load = load
        self._series: dict[str, Series] = {}
        self._proxying: dict[str, int] = {}  # series → hour its current proxied stretch began
        self.proxy_events: list[ProxyUsed | DuplicatesResolved] = []  # every data decision, in the order taken
        self._resolved: set[str] = set()  # series whose duplicate rule has been reported
        self._last_rate: dict[str, float] = {}  # funding series → its previous settlement's rate

    @property
    def data_dir(self) -> Path:
        return self._dir

    @property
    def identity(self) -> str:
        """What, besides the files, decides the bars this history builds (for the bar cache's key)."""
        return f"proxies={sorted(self._proxies.items())!r}|rewards={self._rewards}|lst={self._lst}"

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
            held = not exact and key in self._proxies and not self._recorded_at(key, t_ns)
            fresh = self._fresh_proxy(key, t_ns) if held else None
            if fresh is not None:
                return fresh
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

    def _recorded_at(self, key: str, t_ns: int) -> bool:
        try:
            self.series(key).at(t_ns, 0)
        except StaleData:
            return False
        return True

    def _fresh_proxy(self, key: str, t_ns: int) -> float | None:
        """The proxy's value recorded at `t_ns` itself, standing in for `key`'s value held over from an earlier
        hour (within its staleness limit). A venue's mark held for two hours while the others move is a basis that
        never existed: on history each of Binance's fifteen paging gaps opened with two such hours, +$240 and
        -$420 of basis_pnl that reverted. None if the proxy has no value at that instant either."""
        proxy = self._proxies[key]
        try:
            value = self.value(proxy, t_ns, exact=True)
        except MissingData:
            return None
        if key not in self._proxying:
            self._proxying[key] = t_ns
            self.proxy_events.append(ProxyUsed(key, proxy, t_ns))
        return value

    def funding_rate(self, venue: str, asset: str, t: int) -> float:
        """The funding rate `venue` settled at `t` (or its proxy's); a duplicated settlement with conflicting rates
        is decided by `DUPLICATE_RULE`, reported once per series."""
        key = f"funding:{venue}:{asset}"
        rate = self.value(key, t, exact=True)
        candidates = self.series(key).conflicts.get(t) if key in CATALOG and key not in self._proxying else None
        if candidates:
            others = sorted(r for r in (self._unambiguous_rate(f"funding:{v}:{asset}", t)
                                        for v in FUNDING_VENUES if v != venue) if r is not None)
            if others:
                target = others[len(others) // 2] if len(others) % 2 else sum(others[len(others) // 2 - 1:
                                                                                   len(others) // 2 + 1]) / 2
            else:
                target = self._last_rate.get(key, rate)
            rate = min(candidates, key=lambda c: abs(c - target))  # a tie keeps the file's first row
            if key not in self._resolved:
                self._resolved.add(key)
                self.proxy_events.append(DuplicatesResolved(key, len(self.series(key).conflicts), DUPLICATE_RULE, t))
        self._last_rate[key] = rate
        return rate

    def _unambiguous_rate(self, key: str, t: int) -> float | None:
        """`key`'s own rate at `t` if it is recorded there once (or without conflict); None otherwise."""
        if key not in CATALOG:
            return None
        try:
            series = self.series(key)
            return None if t in series.conflicts else series.at(t, 0)
        except (StaleData, DataError):
            return None

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
            return tuple((v, d(self.funding_rate(v, asset, t), "1e-10")) for v in venues)

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
            lst_liquidity_index=d(self.value(f"aave:{self._lst}:liquidity_index", t), "1e-15"),
            weth_borrow_index=d(self.value("aave:WETH:borrow_index", t), "1e-15"),
            usdt_liquidity_index=d(self.value("aave:USDT:liquidity_index", t), "1e-15"),
            lst_eth_oracle=d(self.value(f"oracle:{self._lst}/ETH", t), "1e-15"),
            gas_gwei=d(self.value("gas:gwei", t), "0.001"),
            weth_liquidity_index=d(self.value("aave:WETH:liquidity_index", t), "1e-15"),
            btc_spot=d(self.value("spot:BTC", t), "0.01") if btc else Decimal(0),
            btc_perp_marks=marks("BTC") if btc else (),
            btc_funding=funding("BTC") if btc else (),
            reward_prices_eth=reward_prices() if self._rewards else (),
            perp_ranges=tuple(ranges("ETH") + (ranges("BTC") if btc else [])),
            lst=self._lst,
            eth_reference=d(self.value(ETH_REFERENCE, t), "0.01"),
        )
