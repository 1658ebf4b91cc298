"""Typed, immutable messages exchanged by the actors.

Grammar (after NautilusTrader): commands are imperative (`SubmitOrder`), events are past tense (`OrderFilled`),
and a venue's own account of itself is a `*Report` (`FillReport`). Every message carries `ts_event` (when it
happened, venue or market time) and `ts_recv` (when our clock saw it), both integer nanoseconds since the epoch.
Quantities and prices are `Decimal`: they are counted, so they must be exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId, TradeId, VenueId, VenueOrderId
from daemon.domain.ledger import ChangeSet, LedgerSnapshot

if TYPE_CHECKING:
    from daemon.domain.market import MarketState
    from daemon.domain.strategy import Instruction


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class TradingState(StrEnum):
    """What the daemon may do with orders (NautilusTrader's risk-engine states)."""

    ACTIVE = "ACTIVE"  # any order allowed
    REDUCING = "REDUCING"  # only orders that reduce exposure
    HALTED = "HALTED"  # no new orders at all


# --- market data: conflated per `key`, the latest value wins -------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTicked:
    """A new mark/last price for one instrument (spot or perp) on one venue."""

    instrument_id: InstrumentId
    price: Decimal
    ts_event: int
    ts_recv: int

    @property
    def key(self) -> str:
        return self.instrument_id


@dataclass(frozen=True, slots=True)
class FundingRateReported:
    """The funding rate a venue will settle for a perpetual at `settles_at_ns` (positive: shorts receive)."""

    instrument_id: InstrumentId
    rate: Decimal
    settles_at_ns: int
    ts_event: int
    ts_recv: int

    @property
    def key(self) -> str:
        return f"funding:{self.instrument_id}"


@dataclass(frozen=True, slots=True)
class ReserveIndexesReported:
    """AAVE reserve indexes as ray / 1e27 (not rebased to 1)."""

    reserve: str
    liquidity_index: Decimal
    borrow_index: Decimal
    ts_event: int
    ts_recv: int

    @property
    def key(self) -> str:
        return f"aave:{self.reserve}"


@dataclass(frozen=True, slots=True)
class OracleRateReported:
    """An oracle rate quoted as quote per base, e.g. `weETH/ETH` = ETH per 1 weETH."""

    pair: str
    rate: Decimal
    ts_event: int
    ts_recv: int

    @property
    def key(self) -> str:
        return f"oracle:{self.pair}"


@dataclass(frozen=True, slots=True)
class GasPriceReported:
    gwei: Decimal
    ts_event: int
    ts_recv: int

    @property
    def key(self) -> str:
        return "gas"


MarketData = PriceTicked | FundingRateReported | ReserveIndexesReported | OracleRateReported | GasPriceReported


@dataclass(frozen=True, slots=True)
class MarketUpdated:
    """One instant of market data as the feed delivered it together (an hourly bar, one websocket frame).

    Readers fold it into their board in one step and act once: one message per series cost every reader a
    wake-up per series, about a dozen an hour, which was most of a backtest's time. A pending batch that is
    conflated merges with the newer one (`merged_with`), so the latest value of every series survives — a
    funding report is never lost to the next hour's prices.
    """

    updates: tuple[MarketData, ...]
    ts_event: int
    ts_recv: int

    @property
    def key(self) -> str:
        return "market"

    def merged_with(self, newer: MarketUpdated) -> MarketUpdated:
        latest = {u.key: u for u in self.updates}
        latest.update((u.key, u) for u in newer.updates)
        return MarketUpdated(tuple(latest.values()), newer.ts_event, newer.ts_recv)


# --- commands: lossless, the producer waits -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitOrder:
    client_order_id: ClientOrderId
    instruction_id: InstructionId
    instrument_id: InstrumentId
    side: Side
    quantity: Decimal
    reduce_only: bool
    reason: str
    ts_event: int
    ts_recv: int
    # The worst price the order may fill at (fill-or-kill beyond it: the venue refuses the whole order), set by
    # execution from the slippage cap (risk.max_slippage_bps); None: a plain market order.
    limit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class HaltTrading:
    reason: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class ResumeTrading:
    reason: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class ExecuteInstruction:
    """Carry out one instruction of the strategy manager, its steps in order."""

    instruction_id: InstructionId
    instruction: Instruction
    ts_event: int
    ts_recv: int
    # An operator's emergency flatten (`basisd halt --flatten`): the strategy's unwind, carried out although
    # trading is HALTED — it only takes exposure down, and a human asked for it.
    operator_flatten: bool = False


# (Cancellation commands arrive with the venue adapters; no command type exists that nothing handles.)
Command = SubmitOrder | HaltTrading | ResumeTrading | ExecuteInstruction


# --- venue reports: the venue's own account, ground truth -----------------------------------------------


@dataclass(frozen=True, slots=True)
class FillReport:
    """A trade as the venue reported it. May arrive twice (stream and REST backstop): dedup by `trade_id`."""

    venue: VenueId
    trade_id: TradeId
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId
    instrument_id: InstrumentId
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class OrderStatusReport:
    venue: VenueId
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId | None
    status: str  # "accepted" | "rejected" | "filled" | "canceled"
    reason: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class BalanceReport:
    venue: VenueId
    asset: str
    total: Decimal
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class AccountReport:
    """A venue's whole view of one of our accounts, asked for by the reconciler: every token balance as the venue
    holds it (AAVE positions as scaled balances), every open perp, and how many reports it has issued so far
    (None where the venue cannot say), so that a comparison is made only once our books have caught up."""

    account: str  # the account's name in our ledger: an exchange, or the wallet
    balances: tuple[tuple[str, Decimal], ...]  # (token, amount), non-zero only
    perps: tuple[tuple[str, Decimal], ...]  # (instrument, signed quantity), open only
    reports_sent: int | None
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class BalancesChanged:
    """A venue's report of a balance change other than a trade fill (a transfer, an on-chain transaction, a
    funding settlement), as the ledger change set it amounts to. Travels on the same ordered channel as
    fills, so the books see every venue event in the order it happened."""

    venue: VenueId
    report_id: str  # unique per venue: a resent report is recognised and booked once
    change: ChangeSet
    ts_event: int
    ts_recv: int


VenueReport = FillReport | BalancesChanged


# --- events: past tense -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderRejected:
    client_order_id: ClientOrderId
    instrument_id: InstrumentId
    reason: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class OrderFilled:
    """A fill accepted into our books: journaled (once persistence exists) before it is published."""

    venue: VenueId
    trade_id: TradeId
    client_order_id: ClientOrderId
    instrument_id: InstrumentId
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class TradingStateChanged:
    previous: TradingState
    current: TradingState
    reason: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class PositionView:
    instrument_id: InstrumentId
    quantity: Decimal  # signed: negative is short
    average_price: Decimal
    mark_price: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal


@dataclass(frozen=True, slots=True)
class PortfolioSnapshotted:
    """The positions actor's view after applying every change so far; conflated, the latest wins."""

    positions: tuple[PositionView, ...]
    cash: tuple[tuple[str, Decimal], ...]  # (account:asset, amount)
    eth_usd: Decimal
    net_delta_eth: Decimal
    nav_usd: Decimal
    reports_booked: int
    ts_event: int
    ts_recv: int
    ledger: LedgerSnapshot | None = None  # the books this view was valued from
    series_ages_s: tuple[tuple[str, Decimal], ...] = ()  # market data age per series, in market time
    # Per ledger account, the reports booked this run that touch it (daemon.domain.reconcile.ReportCount): the
    # reconciler compares an account once these reach what its venue says it published.
    booked_by_account: tuple[tuple[str, int], ...] = ()

    @property
    def key(self) -> str:
        return "portfolio"


@dataclass(frozen=True, slots=True)
class InstructionFinished:
    instruction_id: InstructionId
    completed: bool
    steps_done: int
    reports: int  # venue reports the steps produced: the books are current once they have booked this many
    reason: str
    ts_event: int
    ts_recv: int


@dataclass(frozen=True, slots=True)
class RiskAssessed:
    """The risk actor's reading of the latest portfolio snapshot; conflated, the latest wins."""

    trading: TradingState  # the state in force after this assessment
    solvency: str  # worst level across venues: OK | WARNING | URGENT | CRITICAL
    margin_ratios: tuple[tuple[str, Decimal], ...]  # (venue, ratio)
    drawdown: Decimal
    breaker: str
    mark_divergence: Decimal
    ts_event: int
    ts_recv: int

    @property
    def key(self) -> str:
        return "risk"


@dataclass(frozen=True, slots=True)
class PnlAttributed:
    """One market hour's P&L, attributed: the components sum to the NAV change less flows, up to `residual`."""

    ts_event: int  # the hour closed
    currency: str
    nav_before: Decimal
    nav_after: Decimal
    flows: Decimal
    components: tuple[tuple[str, Decimal], ...]
    residual: Decimal
    changes: tuple[ChangeSet, ...]  # every balance change booked in the hour, in order
    ts_recv: int
    ledger: LedgerSnapshot | None = None  # the books at the close
    market: MarketState | None = None  # the market at the close


OrderEvent = OrderFilled | OrderRejected | InstructionFinished
