"""A point-in-time view of the market as the domain needs it: prices, per-venue perp marks, LST oracle
rates and AAVE indexes. Built by the actors from market data; pure values here.

`prices_usd` holds one valuation reference per asset (for ETH a liquid CEX spot standing in for the perps'
index: see `daemon.data.bars.ETH_REFERENCE`); every holding is valued at it, the perps at their own venue's mark
on top (the difference is `basis_pnl`). Where a trade executes at another price (a DEX pool's, `dex_prices` on
the board) the gap to the reference is that trade's cost, never a revaluation of the book."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from daemon.domain.messages import (
    FundingRateReported,
    GasPriceReported,
    OracleRateReported,
    PriceTicked,
    ReserveIndexesReported,
)

ONE = Decimal(1)

# aToken / debt token → (AAVE reserve, underlying token in the wallet's terms)
ATOKEN_RESERVE: dict[str, tuple[str, str]] = {
    "aWeETH": ("weETH", "weETH"), "awstETH": ("wstETH", "wstETH"), "aUSDT": ("USDT", "USDT"),
    "aBTC": ("BTC", "BTC"), "aWETH": ("WETH", "ETH"),
}
DEBT_RESERVE: dict[str, tuple[str, str]] = {
    "variableDebtWETH": ("WETH", "ETH"), "variableDebtUSDT": ("USDT", "USDT"), "variableDebtBTC": ("BTC", "BTC"),
}
STABLECOINS = frozenset({"USDT"})
LSTS = frozenset({"weETH", "wstETH"})


class MarketBoard:
    """Folds market-data messages into the latest `MarketState` (the positions and risk actors keep one)."""

    def __init__(self) -> None:
        self.ts_ns = 0
        self.prices: dict[str, Decimal] = {}
        self.dex_prices: dict[str, Decimal] = {}  # asset → USD price in the DEX pool the chain swaps in
        self.marks: dict[tuple[str, str], Decimal] = {}
        self.lst: dict[str, Decimal] = {}
        self.supply: dict[str, Decimal] = {"WETH": ONE}
        self.borrow: dict[str, Decimal] = {}
        self.gas_gwei: Decimal | None = None
        self.funding: dict[tuple[str, str], Decimal] = {}  # (venue, asset) → the rate last reported (the report's)
        self.updated_ns: dict[str, int] = {}  # series → ts_event of its last update (for staleness)

    def update(self, message: object) -> None:
        if isinstance(message, PriceTicked):
            venue, kind, symbol = message.instrument_id.split(":")
            asset = symbol[:-4]
            if kind == "Perp":
                self.marks[(venue, asset)] = message.price
            elif kind == "Dex":
                self.dex_prices[asset] = message.price  # an execution price only: never a valuation
            else:
                self.prices[asset] = message.price
            key: str = message.instrument_id
        elif isinstance(message, OracleRateReported):
            self.lst[message.pair.split("/")[0]] = message.rate
            key = f"oracle:{message.pair}"
        elif isinstance(message, ReserveIndexesReported):
            self.supply[message.reserve] = message.liquidity_index
            self.borrow[message.reserve] = message.borrow_index
            key = f"aave:{message.reserve}"
        elif isinstance(message, FundingRateReported):
            venue, _, symbol = message.instrument_id.split(":")
            self.funding[(venue, symbol[:-4])] = message.rate
            key = f"funding:{message.instrument_id}"
        elif isinstance(message, GasPriceReported):
            self.gas_gwei = message.gwei
            key = "gas"
        else:
            return
        ts = getattr(message, "ts_event", 0)
        self.ts_ns = max(self.ts_ns, ts)
        self.updated_ns[key] = ts

    def dex_price(self, asset: str) -> Decimal | None:
        """The price a DEX swap of `asset` executes at: the pool's, else the reference (a source with one price)."""
        return self.dex_prices.get(asset, self.prices.get(asset))

    def ages_s(self) -> dict[str, Decimal]:
        """Each series' age in market time: how far behind the freshest update it is. Measured against the
        market rather than the wall clock, so it flags a feed that stopped, whatever the replay speed."""
        return {k: Decimal(self.ts_ns - ts) / Decimal(1_000_000_000) for k, ts in self.updated_ns.items()}

    def state(self) -> MarketState:
        return MarketState(self.ts_ns, dict(self.prices), dict(self.marks), dict(self.lst), dict(self.supply),
                           dict(self.borrow), dict(self.funding))


class MissingMarketData(LookupError):
    """A value the calculation needs is not in the market state: never guessed, always named."""


@dataclass(frozen=True, slots=True)
class MarketState:
    ts_ns: int
    prices_usd: Mapping[str, Decimal]  # spot: "ETH", "BTC", "EIGEN", "ETHFI"
    perp_marks: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)  # (venue, asset) → USD mark
    lst_rates: Mapping[str, Decimal] = field(default_factory=dict)  # "weETH" → ETH per weETH (quote per base)
    liquidity_index: Mapping[str, Decimal] = field(default_factory=dict)  # reserve → L (ray / 1e27)
    borrow_index: Mapping[str, Decimal] = field(default_factory=dict)  # reserve → B (ray / 1e27)
    # (venue, asset) → the funding rate last reported (settled): what the backtest's report charts per venue
    funding_rates: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)

    def price_usd(self, asset: str) -> Decimal:
        if asset in STABLECOINS:
            return ONE
        if asset in LSTS:
            return self.lst_rate(asset) * self.price_usd("ETH")
        try:
            return self.prices_usd[asset]
        except KeyError:
            raise MissingMarketData(f"no USD price for {asset}") from None

    def mark(self, venue: str, asset: str) -> Decimal:
        """The venue's own mark for its perp; never an average across venues (ADR-14)."""
        try:
            return self.perp_marks[(venue, asset)]
        except KeyError:
            raise MissingMarketData(f"no {asset} perp mark for {venue}") from None

    def lst_rate(self, lst: str) -> Decimal:
        try:
            return self.lst_rates[lst]
        except KeyError:
            raise MissingMarketData(f"no {lst}/ETH oracle rate") from None

    def supply_index(self, reserve: str) -> Decimal:
        try:
            return self.liquidity_index[reserve]
        except KeyError:
            raise MissingMarketData(f"no AAVE liquidity index for {reserve}") from None

    def debt_index(self, reserve: str) -> Decimal:
        try:
            return self.borrow_index[reserve]
        except KeyError:
            raise MissingMarketData(f"no AAVE borrow index for {reserve}") from None

    def native(self, token: str, amount: Decimal) -> tuple[str, Decimal]:
        """(underlying, native amount) of a wallet token; scaled AAVE balances are multiplied by their index."""
        if token in ATOKEN_RESERVE:
            reserve, underlying = ATOKEN_RESERVE[token]
            return underlying, amount * self.supply_index(reserve)
        if token in DEBT_RESERVE:
            reserve, underlying = DEBT_RESERVE[token]
            return underlying, -amount * self.debt_index(reserve)
        return token, amount
