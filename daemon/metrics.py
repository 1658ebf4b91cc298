"""Prometheus metrics, computed at scrape time from plain state: `statistics()`, the supervisor's records,
the books' latest snapshot, the risk actor's latest reading and the venue ports' records (`daemon.telemetry`).

Nothing on the hot path touches prometheus-client: channels, actors and ports keep plain counters, and this
collector turns them into metric families when Prometheus asks. Names follow Prometheus conventions:
`basisd_` prefix, base units (`_seconds`, `_ratio`, `_eth`, `_usd`; money in the share class's currency
carries a `currency` label), `_total` for counters. Labels are bounded (actor, channel, venue, component,
series, kind, limit), never order ids.

Every family is described at every scrape, with no samples while its source has nothing to say yet (before
the first snapshot; the health factor without AAVE debt; drift before the first reconciliation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from daemon import __version__
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.clock import Clock
from daemon.domain.exposure import compute_exposure
from daemon.domain.ledger import LedgerSnapshot
from daemon.domain.market import (
    STABLECOINS,
    MarketBoard,
    MarketState,
    MissingMarketData,
)
from daemon.domain.messages import PortfolioSnapshotted, RiskAssessed, TradingState
from daemon.domain.neutrality import book_delta
from daemon.domain.pnl import FUNDING, aave_position_usd
from daemon.domain.risk import DrawdownAction, DrawdownBreaker, Level
from daemon.domain.strategy import ModeSpec
from daemon.lifecycle import LATENCY_BUCKETS_S, ActorState
from daemon.metrics_server import MetricsError as MetricsError  # re-exported: the composition root's imports
from daemon.metrics_server import serve_metrics as serve_metrics
from daemon.supervisor import Supervisor
from daemon.telemetry import VENUE_LATENCY_BUCKETS_S, ReconciliationRecord, VenueStats
from daemon.trading import TradingStateCell

log = structlog.get_logger()

ZERO = Decimal(0)

GaugeSource = Callable[[], Mapping[tuple[tuple[str, str], ...], float]]


class PortfolioReadout(Protocol):
    """What the collector reads from the books (the positions actor)."""

    @property
    def latest(self) -> PortfolioSnapshotted | None: ...

    @property
    def board(self) -> MarketBoard: ...

    @property
    def pnl_totals(self) -> Mapping[str, Decimal]: ...

    @property
    def max_abs_residual(self) -> Decimal: ...


class StrategyReadout(Protocol):
    @property
    def decisions(self) -> int: ...

    @property
    def instructions(self) -> int: ...

    @property
    def failed_instructions(self) -> int: ...

    @property
    def completed_instructions(self) -> int: ...


class JournalReadout(Protocol):
    @property
    def appended(self) -> int: ...

    @property
    def failed(self) -> str: ...


class OperatorReadout(Protocol):
    @property
    def cancelled_orders(self) -> int: ...

    @property
    def sweeps(self) -> int: ...


class RiskGateReadout(Protocol):
    @property
    def rejected(self) -> int: ...

    @property
    def breaker(self) -> DrawdownBreaker: ...


@dataclass
class MetricSources:
    supervisor: Supervisor
    trading: TradingStateCell
    channels: Mapping[str, LosslessChannel[object] | ConflatingChannel[object]]
    inbox_of: Mapping[str, str]  # actor name -> the channel name of its inbox
    runtime_mode: str
    strategy_mode: str
    clock: Clock | None = None  # market time: data and reconciliation ages
    spec: ModeSpec | None = None  # share class currency, asset, AAVE liquidation threshold and target LTV
    portfolio: PortfolioReadout | None = None
    risk: Callable[[], RiskAssessed | None] | None = None  # the risk actor's latest published reading
    risk_limits: Callable[[], Mapping[str, float]] | None = None  # the thresholds in force (SIGHUP reloads them)
    strategy: StrategyReadout | None = None
    risk_gate: RiskGateReadout | None = None
    venues: VenueStats | None = None
    reconciliation: ReconciliationRecord | None = None
    operator: OperatorReadout | None = None  # the emergency stop: open orders cancelled on halts
    journal: JournalReadout | None = None  # absent without runtime.state_dir
    lending_venue: str = "aave_v3"
    # Liquidations each venue has counted (exchange accounts and the lending position), every venue from the
    # start so that the first one shows in increase().
    liquidations: Callable[[], Mapping[str, int]] | None = None
    # Extra gauges (name -> (help, source)); each source returns {label pairs: value}.
    gauges: dict[str, tuple[str, GaugeSource]] = field(default_factory=dict)


class BasisdCollector:
    def __init__(self, sources: MetricSources) -> None:
        self._s = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._actor_metrics()
        yield from self._channel_metrics()
        yield from self._state_metrics()
        yield from self._portfolio_metrics()
        yield from self._risk_metrics()
        yield from self._strategy_metrics()
        yield from self._venue_metrics()
        yield from self._reconciliation_metrics()
        for name, (doc, source) in self._s.gauges.items():
            values = source()
            labelnames = [k for k, _ in next(iter(values))] if values else []
            family = GaugeMetricFamily(name, doc, labels=labelnames)
            for labels, value in values.items():
                family.add_metric([v for _, v in labels], value)
            yield family

    def _actor_metrics(self) -> Iterator[Metric]:
        records = self._s.supervisor.records.values()
        now = time.monotonic()
        handled = CounterMetricFamily("basisd_actor_messages_handled", "Messages handled", labels=["actor"])
        restarts = CounterMetricFamily("basisd_actor_restarts", "Actor restarts", labels=["actor"])
        failures = CounterMetricFamily("basisd_actor_failures", "Actor failures (exceptions)", labels=["actor"])
        dead = CounterMetricFamily(
            "basisd_actor_dead_letters", "Messages dropped after repeated handler failure", labels=["actor"]
        )
        age = GaugeMetricFamily(
            "basisd_actor_heartbeat_age_seconds", "Seconds since the actor's last heartbeat", labels=["actor"]
        )
        up = GaugeMetricFamily("basisd_actor_up", "1 while the actor runs", labels=["actor", "state"])
        depth = GaugeMetricFamily(
            "basisd_actor_queue_depth", "Messages waiting in the actor's inbox", labels=["actor"]
        )
        latency = HistogramMetricFamily(
            "basisd_actor_handler_latency_seconds", "Time spent handling one message", labels=["actor"]
        )
        for r in records:
            handled.add_metric([r.name], r.handled)
            restarts.add_metric([r.name], r.restarts)
            failures.add_metric([r.name], r.failures)
            dead.add_metric([r.name], r.dead_letters)
            beat_age = r.heartbeat_age_s(now)
            age.add_metric([r.name], beat_age if beat_age != float("inf") else -1.0)
            up.add_metric([r.name, r.state.value], 1.0 if r.state is ActorState.RUNNING else 0.0)
            inbox = self._s.inbox_of.get(r.name)
            if inbox is not None:
                depth.add_metric([r.name], len(self._s.channels[inbox]))
            latency.add_metric([r.name], _buckets(LATENCY_BUCKETS_S, r.latency_counts), r.latency_sum_s)
        yield from (handled, restarts, failures, dead, age, up, depth, latency)

    def _channel_metrics(self) -> Iterator[Metric]:
        labels = ["channel", "policy"]
        fams: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "depth": GaugeMetricFamily("basisd_channel_depth", "Messages queued", labels=labels),
            "high_water": GaugeMetricFamily("basisd_channel_high_water", "Highest depth seen", labels=labels),
            "capacity": GaugeMetricFamily("basisd_channel_capacity", "Configured bound", labels=labels),
            "sent": CounterMetricFamily("basisd_channel_sent", "Messages offered", labels=labels),
            "received": CounterMetricFamily("basisd_channel_received", "Messages taken", labels=labels),
            "send_waits": CounterMetricFamily(
                "basisd_channel_send_waits", "Times a producer waited for room", labels=labels
            ),
            "dropped": CounterMetricFamily("basisd_channel_dropped", "Messages dropped", labels=labels),
            "conflated": CounterMetricFamily(
                "basisd_channel_conflated", "Messages replaced by a newer value", labels=labels
            ),
        }
        for channel in self._s.channels.values():
            st = channel.statistics()
            for attr, fam in fams.items():
                fam.add_metric([st.name, st.policy.value], getattr(st, attr))
        yield from fams.values()

    def _state_metrics(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "basisd_trading_state", "1 for the current trading state, 0 for the others", labels=["state"]
        )
        for s in TradingState:
            state.add_metric([s.value], 1.0 if self._s.trading.state is s else 0.0)
        yield state
        halted = GaugeMetricFamily("basisd_trading_halted", "1 while trading is halted")
        halted.add_metric([], 1.0 if self._s.trading.state is TradingState.HALTED else 0.0)
        yield halted
        transitions = CounterMetricFamily("basisd_trading_state_transitions", "Changes of the trading state")
        transitions.add_metric([], self._s.trading.transitions)
        yield transitions
        fresh = GaugeMetricFamily(
            "basisd_heartbeats_fresh", "1 while every live actor's heartbeat is fresh (the condition for WATCHDOG=1)"
        )
        fresh.add_metric([], 1.0 if self._s.supervisor.heartbeats_fresh() else 0.0)
        yield fresh
        info = InfoMetricFamily("basisd_build", "Version and run configuration of this process")
        info.add_metric([], {
            "version": __version__, "runtime_mode": self._s.runtime_mode, "strategy_mode": self._s.strategy_mode,
        })
        yield info

    def _portfolio_metrics(self) -> Iterator[Metric]:
        spec, portfolio = self._s.spec, self._s.portfolio
        currency = spec.share_class if spec is not None else "USD"
        nav_usd = GaugeMetricFamily("basisd_nav_usd", "Net asset value from the ledger at market, in USD",
                                    labels=["currency"])
        nav = GaugeMetricFamily("basisd_nav", "Net asset value in the share class's currency", labels=["currency"])
        pnl = GaugeMetricFamily("basisd_pnl", "P&L since start by component, in the share class's currency "
                                "(attributed at each market hour's close)", labels=["component", "currency"])
        funding = GaugeMetricFamily("basisd_funding_received", "Net funding received since start (negative: paid), "
                                    "in the share class's currency", labels=["currency"])
        residual = GaugeMetricFamily("basisd_pnl_residual_max",
                                     "Largest hourly P&L residual seen (attribution check; ~0)")
        booked = CounterMetricFamily("basisd_venue_reports_booked",
                                     "Venue reports booked (fills, transfers, transactions, settlements)")
        perps = GaugeMetricFamily("basisd_perp_position_eth", "Signed perp size per instrument", labels=["instrument"])
        ages = GaugeMetricFamily("basisd_data_age_seconds", "Market-time age of each data series, behind the "
                                 "freshest one", labels=["series"])
        market_age = GaugeMetricFamily("basisd_market_data_age_seconds",
                                       "Clock time since the newest market data the books were valued at")
        market_time = GaugeMetricFamily("basisd_market_time_seconds", "Market (virtual clock) time, Unix seconds")
        net_delta = GaugeMetricFamily("basisd_net_delta_eth", "Net delta of each asset, on chain plus CEX, in ETH",
                                      labels=["asset"])
        delta = GaugeMetricFamily("basisd_delta_eth", "Delta of each asset by location (onchain, cex), in ETH; the "
                                  "two sum to basisd_net_delta_eth", labels=["asset", "location"])
        drift = GaugeMetricFamily("basisd_delta_drift_ratio", "|Net delta| as a fraction of the perp hedge notional "
                                  "(assets with a hedge)", labels=["asset"])
        families: list[Metric] = [nav_usd, nav, pnl, funding, residual, booked, perps, ages, market_age, market_time,
                                  net_delta, delta, drift]
        clock = self._s.clock
        if clock is not None:
            market_time.add_metric([], clock.now_ns() / 1e9)
        if portfolio is not None:
            for name, value in portfolio.pnl_totals.items():
                pnl.add_metric([name, currency], float(value))
            funding.add_metric([currency], float(portfolio.pnl_totals.get(FUNDING, ZERO)))
            residual.add_metric([], float(portfolio.max_abs_residual))
        snap = portfolio.latest if portfolio is not None else None
        if portfolio is None or snap is None:
            yield from families
            yield from self._aave_families(None, None)
            return
        nav_usd.add_metric(["USD"], float(snap.nav_usd))
        booked.add_metric([], snap.reports_booked)
        for p in snap.positions:
            perps.add_metric([str(p.instrument_id)], float(p.quantity))
        for series, age in snap.series_ages_s:
            ages.add_metric([series], float(age))
        if clock is not None:
            market_age.add_metric([], (clock.now_ns() - snap.ts_event) / 1e9)
        market: MarketState | None = None
        try:
            market = portfolio.board.state()
            nav.add_metric([currency], float(snap.nav_usd / _price_usd(currency, snap, market)))
            if snap.ledger is not None:
                _add_exposure(snap.ledger, market, net_delta, delta, drift, currency)
        except (MissingMarketData, ArithmeticError):
            pass  # not every series has arrived yet: what needs them waits for the next scrape
        yield from families
        yield from self._aave_families(snap.ledger, market)

    def _aave_families(self, ledger: LedgerSnapshot | None, market: MarketState | None) -> Iterator[Metric]:
        labels = ["venue"]
        hf = GaugeMetricFamily("basisd_aave_health_factor", "AAVE health factor, liquidation threshold × collateral "
                               "/ debt, from our books (absent without debt; liquidation below 1)", labels=labels)
        ltv = GaugeMetricFamily("basisd_aave_ltv_ratio", "AAVE loan to value, debt / collateral, from our books",
                                labels=labels)
        target = GaugeMetricFamily("basisd_aave_target_ltv_ratio", "The strategy's target LTV", labels=labels)
        collateral = GaugeMetricFamily("basisd_aave_collateral_eth", "AAVE collateral at the oracle, in ETH",
                                       labels=labels)
        debt = GaugeMetricFamily("basisd_aave_debt_eth", "AAVE debt at the borrow index, in ETH", labels=labels)
        spec, venue = self._s.spec, [self._s.lending_venue]
        if spec is not None and spec.lending:
            target.add_metric(venue, float(spec.target_ltv))
            position = _aave_position_or_none(ledger, market)
            if position is not None:
                c, d = position
                collateral.add_metric(venue, float(c))
                debt.add_metric(venue, float(d))
                ltv.add_metric(venue, float(d / c) if c else 0.0)
                if d > 0:
                    hf.add_metric(venue, float(spec.liquidation_threshold * c / d))
        yield from (hf, ltv, target, collateral, debt)

    def _risk_metrics(self) -> Iterator[Metric]:
        margin = GaugeMetricFamily("basisd_margin_ratio", "CEX margin ratio per venue: (USDT + uPnL) / notional",
                                   labels=["venue"])
        drawdown = GaugeMetricFamily("basisd_drawdown_ratio", "Drawdown of NAV from its peak, as a fraction")
        breaker = GaugeMetricFamily("basisd_drawdown_breaker_level", "Drawdown breaker level, latched: 0 none, "
                                    "1 reduce (half of every leg unwound), 2 close part (half of what is left), "
                                    "3 flatten and halt")
        solvency = GaugeMetricFamily("basisd_solvency_level",
                                     "Worst CEX margin level: 0 OK, 1 warning, 2 urgent, 3 critical")
        divergence = GaugeMetricFamily("basisd_mark_divergence_ratio",
                                       "Largest gap between venues' perp marks, as a fraction")
        limits = GaugeMetricFamily("basisd_risk_limit", "Risk thresholds in force (the risk: settings; SIGHUP "
                                   "reloads them)", labels=["limit"])
        reading = self._s.risk() if self._s.risk is not None else None
        if reading is not None:
            for venue, ratio in reading.margin_ratios:
                margin.add_metric([venue], float(ratio))
            drawdown.add_metric([], float(reading.drawdown))
            if reading.breaker in DrawdownAction.__members__:
                breaker.add_metric([], DrawdownAction[reading.breaker].value)
            if reading.solvency in Level.__members__:
                solvency.add_metric([], Level[reading.solvency].value)
            divergence.add_metric([], float(reading.mark_divergence))
        in_force = dict(self._s.risk_limits()) if self._s.risk_limits is not None else {}
        if self._s.risk_gate is not None:
            # The breaker keeps the levels it was built or restored (state_dir) with: a SIGHUP does not move them.
            b = self._s.risk_gate.breaker
            in_force.update(drawdown_reduce_fraction=float(b.reduce_fraction),
                            drawdown_close_fraction=float(b.close_fraction),
                            drawdown_halt_fraction=float(b.halt_fraction))
        for name, value in sorted(in_force.items()):
            limits.add_metric([name], float(value))
        yield from (margin, drawdown, breaker, solvency, divergence, limits)

    def _strategy_metrics(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily("basisd_strategy_decisions",
                                        "Decisions the strategy manager took (once a market hour on a replay, every "
                                        "strategy.decision_interval_s on live data)")
        issued = CounterMetricFamily("basisd_instructions_issued", "Instructions the strategy sent to risk")
        failed = CounterMetricFamily("basisd_instructions_failed", "Instructions that did not complete (refused "
                                     "by risk, or a step failed)")
        executed = CounterMetricFamily("basisd_instructions_executed", "Instructions whose every step completed")
        refused = CounterMetricFamily("basisd_risk_refusals", "Orders and instructions risk refused for the "
                                      "trading state")
        cancelled = CounterMetricFamily("basisd_orders_cancelled", "Open orders cancelled by halts (emergency stop)")
        sweeps = CounterMetricFamily("basisd_halt_cancel_sweeps", "Cancel-everything sweeps run after halts")
        if self._s.strategy is not None:
            decisions.add_metric([], self._s.strategy.decisions)
            issued.add_metric([], self._s.strategy.instructions)
            failed.add_metric([], self._s.strategy.failed_instructions)
            executed.add_metric([], self._s.strategy.completed_instructions)
        if self._s.risk_gate is not None:
            refused.add_metric([], self._s.risk_gate.rejected)
        if self._s.operator is not None:
            cancelled.add_metric([], self._s.operator.cancelled_orders)
            sweeps.add_metric([], self._s.operator.sweeps)
        yield from (decisions, issued, failed, executed, refused, cancelled, sweeps)
        liquidations = CounterMetricFamily("basisd_liquidations", "Liquidations by venue: an exchange account "
                                           "closed out by the venue, or a liquidation call on the lending position",
                                           labels=["venue"])
        if self._s.liquidations is not None:
            for venue, count in sorted(self._s.liquidations().items()):
                liquidations.add_metric([venue], count)
        yield liquidations

    def _venue_metrics(self) -> Iterator[Metric]:
        orders = HistogramMetricFamily("basisd_order_latency_seconds", "Order round trip: submitted to the venue's "
                                       "answer", labels=["venue"])
        chain = HistogramMetricFamily("basisd_chain_transaction_latency_seconds", "On-chain transaction round trip "
                                      "by operation", labels=["operation"])
        errors = CounterMetricFamily("basisd_venue_errors", "Venue errors by kind (rejected: the venue refused an "
                                     "order; retryable, non_retryable, fatal, other: the error tree)",
                                     labels=["venue", "kind"])
        stats = self._s.venues
        if stats is not None:
            for venue, record in sorted(stats.order_latency.items()):
                orders.add_metric([venue], _buckets(VENUE_LATENCY_BUCKETS_S, record.counts), record.sum_s)
            for operation, record in sorted(stats.chain_latency.items()):
                chain.add_metric([operation], _buckets(VENUE_LATENCY_BUCKETS_S, record.counts), record.sum_s)
            for (venue, kind), count in sorted(stats.errors.items()):
                errors.add_metric([venue, kind], count)
        yield from (orders, chain, errors)

    def _reconciliation_metrics(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("basisd_reconciliation_runs", "Completed reconciliations of the books against "
                                   "the venues")
        failures = CounterMetricFamily("basisd_reconciliation_failures", "Reconciliations that could not complete")
        age = GaugeMetricFamily("basisd_reconciliation_age_seconds", "Clock time since the last completed "
                                "reconciliation (since start-up while none has completed)")
        drift = GaugeMetricFamily("basisd_reconciliation_drift_usd", "Books against the venue at the last "
                                  "reconciliation, |difference| in USD", labels=["venue"])
        record = self._s.reconciliation
        if record is not None:
            runs.add_metric([], record.runs)
            failures.add_metric([], record.failures)
            if self._s.clock is not None:
                age.add_metric([], record.age_s(self._s.clock.now_ns()))
            for venue, usd in sorted(record.drift_usd.items()):
                drift.add_metric([venue], float(usd))
        yield from (runs, failures, age, drift)
        records = CounterMetricFamily("basisd_journal_records", "Records appended to the journal (reports, orders, "
                                      "trading states, reconciliations)")
        failed = GaugeMetricFamily("basisd_journal_failed", "1 once a journal write has failed (trading is halted)")
        journal = self._s.journal
        if journal is not None:
            records.add_metric([], journal.appended)
            failed.add_metric([], 1.0 if journal.failed else 0.0)
        yield from (records, failed)


def aave_position_eth(ledger: LedgerSnapshot, market: MarketState) -> tuple[Decimal, Decimal]:
    """(collateral, debt) of the wallet's AAVE position in ETH. Raises `MissingMarketData` if an index, rate or
    price is missing."""
    collateral, debt = aave_position_usd(ledger, market)
    if not collateral and not debt:
        return ZERO, ZERO  # no position: no ETH price needed
    eth_usd = market.price_usd("ETH")
    return collateral / eth_usd, debt / eth_usd


def _aave_position_or_none(ledger: LedgerSnapshot | None,
                           market: MarketState | None) -> tuple[Decimal, Decimal] | None:
    if ledger is None or market is None:
        return None
    try:
        return aave_position_eth(ledger, market)
    except (MissingMarketData, ArithmeticError):
        return None


def _add_exposure(ledger: LedgerSnapshot, market: MarketState, net_delta: GaugeMetricFamily,
                  delta: GaugeMetricFamily, drift: GaugeMetricFamily, share_class: str = "USDT") -> None:
    """Delta per asset in ETH (on chain, CEX, net) and its drift against the hedge — the strategy's, from
    `daemon.domain.neutrality.book_delta` — for each asset with a hedge; ETH always, others if held."""
    exposure = compute_exposure(ledger, market)
    for asset, e in exposure.assets.items():
        if asset != "ETH" and not e.net_native:
            continue
        eth = e.price_usd / e.eth_usd if asset != "ETH" else Decimal(1)
        net_delta.add_metric([asset], float(e.net_native * eth))
        delta.add_metric([asset, "onchain"], float(e.onchain_native * eth))
        delta.add_metric([asset, "cex"], float(e.cex_native * eth))
        book = book_delta(ledger, market, share_class, asset)
        if book.drift is not None:
            drift.add_metric([asset], float(book.drift))


def _price_usd(currency: str, snap: PortfolioSnapshotted, market: MarketState) -> Decimal:
    """The share class currency's USD price at the snapshot (the snapshot's own ETH price when it is ETH)."""
    if currency in STABLECOINS or currency == "USD":
        return Decimal(1)
    return snap.eth_usd if currency == "ETH" else market.price_usd(currency)


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs from per-bucket counts (the last one is +Inf)."""
    cumulative, out = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        out.append((_le(bound), float(cumulative)))
    return out


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def build_registry(sources: MetricSources) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BasisdCollector(sources))
    return registry
