"""The composition root: builds channels, venues and actors from a resolved config and runs them.

Edge policies (see `daemon.bus`):

    market_data ──conflating──▶ strategy.market, positions.marks
    positions   ──conflating──▶ strategy.market (snapshots), status
    strategy    ──lossless───▶ risk.commands ──lossless──▶ execution.orders ──▶ venue port
    venue       ──lossless───▶ fills.reports ──lossless──▶ positions.fills, strategy.events
    risk, execution ──lossless──▶ strategy.events (rejections)

Only this module knows both the actors and the venue adapters.
"""

from __future__ import annotations

import random
import signal
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog
from anyio import CancelScope

from actors.api import ApiActor
from actors.execution import ExecutionActor
from actors.fills import FillsActor
from actors.market_data import MarketDataActor
from actors.positions import PositionsActor
from actors.reconciler import ReconcilerActor
from actors.recorder import RecorderActor
from actors.risk import RiskActor
from actors.status import StatusActor
from actors.strategy import StrategyActor
from daemon.api.taps import ApiTaps
from daemon.api.views import ViewConfig
from daemon.bus import ConflatingChannel, Fanout, LosslessChannel
from daemon.chaos import with_chaos
from daemon.config import ResolvedConfig, diff_reloadable, load_settings, reload_problems
from daemon.control import ControlError, serve_control, socket_path
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId, VenueId
from daemon.domain.ledger import Ledger, Reason
from daemon.domain.limits import ExecutionLimits
from daemon.domain.messages import (
    BalancesChanged,
    Command,
    ExecuteInstruction,
    MarketUpdated,
    OrderEvent,
    OrderFilled,
    PnlAttributed,
    PortfolioSnapshotted,
    RiskAssessed,
    Side,
    SubmitOrder,
    TradingState,
    VenueReport,
)
from daemon.domain.reconcile import EXACT, summarize
from daemon.domain.risk import BreakerAction, DrawdownBreaker, RiskLimits
from daemon.domain.strategy import Change, decide
from daemon.domain.view import strategy_view
from daemon.errors import BasisdError, ConfigError, ConfigProblem, IncompleteRunError
from daemon.failures import describe
from daemon.gate import LISTENERS, RECONCILIATION, StartGate
from daemon.journal import Journal
from daemon.journal_books import opening_key
from daemon.lifecycle import Actor
from daemon.metrics import MetricSources, build_registry, serve_metrics
from daemon.mode_spec import coarsest_lot, mode_spec
from daemon.operator import FlattenRefused, Operator
from daemon.risk_wiring import BreakerPlanner, PositionLegs, breaker_settings, execution_limits
from daemon.settings import RiskSettings, Settings
from daemon.state_store import StateStore
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.systemd import Notifier, watchdog_interval_s
from daemon.telemetry import ReconciliationRecord, VenueStats
from daemon.trading import StateTransition, TradingStateCell
from daemon.world import SimulatedVenues, aave_params, build_world

log = structlog.get_logger()


def decision_interval_s(s: Settings) -> float:
    """`strategy.decision_interval_s`, else once per market hour on a replay's hourly bars, every 60 s on live data."""
    if s.strategy.decision_interval_s is not None:
        return s.strategy.decision_interval_s
    return 60.0 if s.runtime.mode in ("paper", "live") else 3600.0


def _key(message: Any) -> str:
    return message.key  # type: ignore[no-any-return]


def _merge(pending: Any, newer: Any) -> Any:
    """Conflation that loses no series: a pending market batch absorbs the newer one; anything else is replaced."""
    if isinstance(pending, MarketUpdated) and isinstance(newer, MarketUpdated):
        return pending.merged_with(newer)
    return newer


# On live data, the longest wait between attempts at an instruction the venues or the limits keep refusing.
FAILURE_BACKOFF_MAX_S = 900.0


class Daemon:
    """One run of the daemon. Build it inside the event loop (anyio primitives need one)."""

    def __init__(self, config: ResolvedConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        s = config.settings
        self.notifier = notifier or Notifier()
        self.risk_settings = s.risk
        self.metrics_port: int | None = None
        self.stop_reason = ""
        self._stop_scope: CancelScope | None = None
        self.trading = TradingStateCell()
        self.trading.subscribe(self._on_trading_state)
        # Nothing reaches a venue before every listener is bound and the books have been checked (daemon.gate);
        # a backtest has neither to wait for, and opens it at once so a run stays deterministic.
        self.gate = StartGate(() if s.runtime.mode == "backtest" else
                              (LISTENERS, RECONCILIATION) if s.reconcile.enabled else (LISTENERS,))
        self.journal = self._open_journal()

        cap = s.channels
        self.channels: dict[str, Any] = {}

        def lossless(name: str, capacity: int) -> LosslessChannel[Any]:
            self.channels[name] = ch = LosslessChannel[Any](name, capacity)
            return ch

        def conflating(name: str, keys: int) -> ConflatingChannel[Any]:
            self.channels[name] = ch = ConflatingChannel[Any](name, keys, _key, _merge)
            return ch

        strategy_market: ConflatingChannel[MarketUpdated | PortfolioSnapshotted] = conflating(
            "strategy.market", cap.market_data_keys)
        strategy_events: LosslessChannel[OrderEvent] = lossless("strategy.events", cap.order_events_capacity)
        positions_marks: ConflatingChannel[MarketUpdated] = conflating("positions.marks", cap.market_data_keys)
        positions_reports: LosslessChannel[OrderFilled | BalancesChanged] = lossless("positions.reports",
                                                                                 cap.fills_capacity)
        status_snaps: ConflatingChannel[PortfolioSnapshotted | RiskAssessed] = conflating("status.snapshots",
                                                                                       cap.snapshot_keys)
        risk_snaps: ConflatingChannel[PortfolioSnapshotted] = conflating("risk.snapshots", cap.snapshot_keys)
        risk_commands: LosslessChannel[Command] = lossless("risk.commands", cap.commands_capacity)
        execution_orders: LosslessChannel[SubmitOrder | ExecuteInstruction] = lossless("execution.orders",
                                                                                      cap.commands_capacity)
        venue_reports: LosslessChannel[VenueReport] = lossless("fills.reports", cap.fills_capacity)
        # The positions API reads copies of the books' inbox, snapshots and market data; a copy never makes a
        # producer wait (daemon.api.taps). A backtest serves nothing.
        self.api_taps: ApiTaps | None = None
        api_market: list[ConflatingChannel[Any]] = []
        api_snapshots: list[ConflatingChannel[Any]] = []
        if s.api.enabled and s.runtime.mode != "backtest":
            self.api_taps = ApiTaps(cap.fills_capacity, cap.snapshot_keys,
                                    conflating("api.market", cap.market_data_keys))
            positions_reports = self.api_taps.tap(positions_reports)
            self.channels.update(self.api_taps.channels())
            api_market, api_snapshots = [self.api_taps.market], [self.api_taps.snapshots]

        replay = s.replay
        self.spec = mode_spec(config)
        usdt_class = config.share_class.currency == "USDT"
        # The world the run trades in — its clock, exchanges, chain and market feed — is built per runtime mode in
        # one place (daemon.world); the actors and their wiring below are the same in every world.
        self.world = build_world(config, self.spec, venue_reports)
        self.clock, self.exchanges, self.chain = self.world.clock, self.world.exchanges, self.world.chain
        self.board, self.feed, self.reward_events = self.world.board, self.world.feed, self.world.reward_events
        cex = {name: v for name, v in config.venues.items() if v.kind == "cex"}
        capital = Decimal(str(s.strategy.initial_capital))
        self.market_data = MarketDataActor(self.feed, Fanout[Any]([strategy_market, positions_marks, *api_market]))
        self.strategy = StrategyActor(strategy_market, strategy_events, risk_commands, spec=self.spec,
                                      venues=tuple(cex),
                                      id_prefix=f"r{self.journal.run}i" if self.journal is not None else "i",
                                      gate=self.gate, limits=self._risk_limits,
                                      decision_interval_s=decision_interval_s(s),
                                      failure_backoff_max_s=FAILURE_BACKOFF_MAX_S if s.runtime.mode in
                                      ("paper", "live") else None,
                                      decide_on_risk=s.runtime.mode in ("paper", "live"))
        self.risk = RiskActor(
            risk_commands, execution_orders, strategy_events, risk_snaps, self._risk_limits,
            DrawdownBreaker().configured(*breaker_settings(s.risk)),
            StateStore(s.runtime.state_dir) if s.runtime.state_dir else None,
            Fanout[RiskAssessed]([status_snaps, *api_snapshots]),  # type: ignore[list-item]
            currency=config.share_class.currency, breaker_levels=self._breaker_levels, gate=self.gate,
            # The breaker's levels act (actors.risk): each unwind is the strategy's recipe on the latest books.
            plan=BreakerPlanner(lambda: self.positions, self.spec, tuple(cex)), record=self._record_breaker,
            follows_execution=True,
        )
        # The ports execution uses are timed (order latency, venue errors by kind) in plain counters for metrics.
        self.venue_stats = VenueStats()
        self.reconciliation = ReconciliationRecord(self.clock.now_ns())  # the reconciler writes it
        self.execution = ExecutionActor(execution_orders, self.venue_stats.exchanges(self.exchanges),
                                        strategy_events, self.venue_stats.chain(self.chain), self.journal,
                                        gate=self.gate, limits=self._execution_limits, market=self.board,
                                        positions=PositionLegs(lambda: self.positions, self.spec, tuple(cex)),
                                        on_finished=self.risk.instruction_finished,
                                        lots={name: coarsest_lot(v, config.params.asset) for name, v in cex.items()})
        self.fills = FillsActor(venue_reports, positions_reports, strategy_events,  # type: ignore[arg-type]
                                self.journal)
        self.recorder: RecorderActor | None = None
        attributions: LosslessChannel[PnlAttributed] | None = None
        if s.runtime.mode == "backtest":
            attributions = lossless("recorder.pnl", cap.fills_capacity)
            self.recorder = RecorderActor(attributions, Path(s.backtest.out_dir), self.spec, tuple(cex))
        reconcile_snaps: list[ConflatingChannel[Any]] = []
        if s.reconcile.enabled:
            reconcile_snaps.append(conflating("reconciler.snapshots", cap.snapshot_keys))
        self.positions = PositionsActor(
            positions_reports, positions_marks,
            Fanout[Any]([strategy_market, status_snaps, risk_snaps, *api_snapshots, *reconcile_snaps]),
            Ledger(tuple(cex), gas_debt_allowed=usdt_class),
            lambda: [self.world.opening] if self.world.start is None else [],  # live: once the venues are read
            currency=config.share_class.currency, attributions=attributions,
        )
        self.status = StatusActor(status_snaps, s.runtime.status_interval_s, self._status_extra,
                                  self.notifier.status)
        self.actors: list[Actor] = [self.positions, self.fills, self.execution, self.risk, self.strategy,
                                    self.market_data, self.status]
        if self.recorder is not None:
            self.actors.append(self.recorder)
        self.reconciler = self._reconciler(reconcile_snaps, positions_reports)
        if self.reconciler is not None:
            self.actors.append(self.reconciler)
        self.api: ApiActor | None = None
        if self.api_taps is not None:
            lending = next((name for name, v in config.venues.items() if v.kind == "lending"), "aave_v3")
            self.api = ApiActor(
                self.api_taps, s.api,
                ViewConfig(config.share_class.currency, aave_params(config).liquidation_threshold, lending, capital),
                records=lambda: self.supervisor.records.values(), heartbeat_timeout_s=s.supervisor.heartbeat_timeout_s,
                limits=self._risk_limits, reconciliation=lambda: self.reconciliation,
                pnl=lambda: self.positions.pnl_totals, waiting_for=lambda: self.gate.reason)
            self.actors.append(self.api)
        self.actors = self._with_chaos(self.actors)
        sup = s.supervisor
        self.supervisor = Supervisor(
            self.actors, clock=self.clock, trading=self.trading,
            policy=RestartPolicy(sup.restart_backoff_initial_s, sup.restart_backoff_max_s,
                                 sup.restart_backoff_multiplier, sup.restart_jitter_fraction,
                                 sup.restart_budget_count, sup.restart_budget_window_s),
            heartbeat_interval_s=sup.heartbeat_interval_s, heartbeat_timeout_s=sup.heartbeat_timeout_s,
            on_escalation=lambda e: self.notifier.status(f"FAILED: {e}"),
            rng=random.Random(replay.seed),
        )
        self.inbox_of = {
            "positions": "positions.reports", "fills": "fills.reports", "execution": "execution.orders",
            "risk": "risk.commands", "strategy": "strategy.events", "status": "status.snapshots",
            "recorder": "recorder.pnl", "api": "api.snapshots", "reconciler": "reconciler.snapshots",
        }
        self._execution_orders = execution_orders  # the operator's flatten goes straight to execution
        self.operator = self._operator()
        self._drills()
        self.operator.restore(warn_if_not_persistent=s.runtime.mode in ("live", "paper"))

    @property
    def simulated(self) -> SimulatedVenues:
        """The simulated exchanges and chain (replay, backtest, paper); a live run has none."""
        if self.world.simulated_chain is None:
            raise RuntimeError(f"a {self.config.settings.runtime.mode} run has no simulated venues")
        return SimulatedVenues(self.world.simulated, self.world.simulated_chain)

    @property
    def risk_settings(self) -> RiskSettings:
        return self._risk_settings

    @risk_settings.setter
    def risk_settings(self, r: RiskSettings) -> None:
        """SIGHUP replaces them; the decimals the risk actor reads on every snapshot are built once per change."""
        self._risk_settings = r
        self._limits = RiskLimits(*(Decimal(str(getattr(r, f))) for f in (
            "margin_warning_ratio", "margin_urgent_ratio", "margin_maintenance_ratio", "delta_warn_fraction",
            "delta_act_fraction", "ltv_warn_above_target", "ltv_act_above_target", "mark_divergence_flag_fraction",
            "mark_divergence_alert_fraction", "data_stale_after_s", "funding_stale_after_s")))
        self._levels = breaker_settings(r)
        self._exec_limits = execution_limits(r)

    def _breaker_levels(self) -> tuple[Decimal, ...]:
        """The drawdown breaker's levels (and unwind fractions, daily loss limit) in force now."""
        return self._levels

    def _execution_limits(self) -> ExecutionLimits:
        """Seed 004's limits in force now: execution asks before each instruction."""
        return self._exec_limits

    def _record_breaker(self, action: BreakerAction, sent: str) -> None:
        """A breaker action in the journal (under runtime.state_dir; a backtest keeps none)."""
        if self.journal is not None:
            self.journal.record_risk_action(time.time_ns(), int(action.level), action.level.name, action.drawdown,
                                            action.daily_loss, action.reason, sent)

    def _risk_limits(self) -> RiskLimits:
        """The limits in force now: the risk actor asks on every snapshot."""
        return self._limits

    # --- running -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stopped by a signal, the end of the replay, `run_for_s`, or a failure (raised)."""
        s = self.config.settings
        for warning in self.config.warnings:
            log.warning("config_corrected", detail=warning)
        log.info("daemon_starting", config=str(self.config.path), runtime_mode=s.runtime.mode,
                 strategy_mode=self.config.mode.name, share_class=self.config.share_class.name,
                 venues=list(self.config.venues),
                 speed=s.replay.speed if s.runtime.mode in ("replay", "backtest") else None)
        self.notifier.status("starting")
        try:
            async with anyio.create_task_group() as tg:
                self._stop_scope = tg.cancel_scope
                tg.start_soon(self._handle_signals)
                tg.start_soon(self.operator.cancel_on_halt)
                # Every listener is bound before any actor that can trade starts: a port in use is a
                # configuration error (exit 78) found before an order, not a failure after one.
                await self._bind_listeners(tg)
                self.gate.passed(LISTENERS)
                if self.world.start is not None:
                    # Live: every venue's start-up checks, and the books' opening read from their accounts, before
                    # any actor runs (a venue that cannot be traded stops the run here: nothing was sent).
                    self.notifier.status("starting: checking the venues")
                    await self.world.start()
                    self._book_live_opening()
                    self._halt_on_recovery()
                for service in self.world.services:
                    tg.start_soon(service)
                if self.world.live is not None:
                    tg.start_soon(self.world.live.watch_access, self._halt_on_access_lost)
                    if self.reconciler is not None:  # a private stream back after a drop: reconcile at once
                        self.world.live.on_stream_reconnected = self.reconciler.request
                await tg.start(self.supervisor.run)
                await self._startup_reconciliation()
                self.gate.passed(RECONCILIATION)
                status = f"running {self.config.mode.name} on {s.runtime.mode}"
                self.notifier.ready(status)
                log.info("daemon_ready", actors=[a.name for a in self.actors], metrics_port=self.metrics_port)
                tg.start_soon(self._watchdog)
                tg.start_soon(self._stop_when_replay_ends)
                if s.runtime.run_for_s is not None:
                    tg.start_soon(self._stop_after, s.runtime.run_for_s)
        except* BasisdError as group:
            # The escalation itself, not a task-group wrapper: the CLI maps it to an exit code.
            raise group.exceptions[0] from None
        finally:
            with CancelScope(shield=True):
                await self.world.aclose()  # the live feed's connections (nothing to close in a simulated world)
            if self.journal is not None:
                self.journal.close(self.stop_reason or "failure")  # the run's end marker
            self.notifier.stopping(self.stop_reason or "stopping")
            log.info("daemon_stopped", reason=self.stop_reason or "failure", trading=self.trading.state.value)

    async def _bind_listeners(self, tg: anyio.abc.TaskGroup) -> None:
        """The control socket, the metrics endpoint and the positions API, each bound or a ConfigError naming
        the key that sets it."""
        s = self.config.settings
        if s.control.enabled and s.runtime.mode != "backtest":
            await tg.start(self._serve_control)
        if s.metrics.enabled:
            self.metrics_port = await tg.start(self._serve_metrics)
        if self.api is not None:
            try:
                await self.api.bind()
            except OSError as exc:
                raise self._bind_error("api.port", s.api.host, s.api.port, exc) from None

    async def _serve_metrics(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        m = self.config.settings.metrics
        try:
            token = m.token.get_secret_value() if m.token is not None else None
            await serve_metrics(build_registry(self._metric_sources()), m.host, m.port, token, task_status=task_status)
        except OSError as exc:  # (a port in use is already a MetricsError: exit 78 naming metrics.port)
            raise self._bind_error("metrics.port", m.host, m.port, exc) from None

    def _bind_error(self, key: str, host: str, port: int, exc: OSError) -> ConfigError:
        problem = (f"cannot listen on {host}:{port}: {exc.strerror or exc} (another process holds it? choose "
                   f"another {key}, or 0 for a free port)")
        log.critical("listener_bind_failed", key=key, host=host, port=port, error=exc.strerror or str(exc))
        return ConfigError([ConfigProblem(str(self.config.path), key, problem)])

    def stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
            log.info("daemon_stopping", reason=reason)
            self.notifier.stopping(reason)
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.stop(f"signal {signal.Signals(signum).name}")
                elif signum == signal.SIGUSR1:
                    await self.operator.halt_and_maybe_flatten("operator signal SIGUSR1")
                elif signum == signal.SIGHUP:
                    self.reload()

    def _operator(self) -> Operator:
        """The emergency stop: SIGUSR1 and `basisd halt` land here; HALTED persists until `basisd resume`."""
        s = self.config.settings
        return Operator(self.trading, self.venue_stats.exchanges(self.exchanges),
                        StateStore(s.runtime.state_dir) if s.runtime.state_dir else None, self.status_report,
                        flatten=self._flatten, flatten_on_halt=s.control.flatten_on_halt,
                        on_resume=self.risk.rearm_breaker,
                        reconcile=self._reconcile_now if s.reconcile.enabled else None)

    def _drills(self) -> None:
        """Chaos settings that give the simulated venues something to find: an unreported credit for the
        reconciler, resting orders for the emergency stop to cancel."""
        chaos = self.config.settings.chaos
        for name, amount in chaos.unreported_usdt.items():
            if name not in self.world.simulated:
                problem = f"no simulated exchange named {name!r} (exchanges: {', '.join(self.world.simulated)})"
                raise ConfigError([ConfigProblem(str(self.config.path), "chaos.unreported_usdt", problem)])
            self.world.simulated[name].credit_unreported("USDT", Decimal(str(amount)))
            log.warning("chaos_unreported_credit", venue=name, usdt=amount)
        for name in chaos.unreachable_accounts:
            self.world.simulated[name].account_queries_time_out = True  # names checked by load_config
            log.warning("chaos_unreachable_account", venue=name)
        for name, exchange in self.world.simulated.items():
            for n in range(chaos.resting_orders_per_venue):
                exchange.rest_order(SubmitOrder(ClientOrderId(f"drill-{name}-{n}"), InstructionId("drill"),
                                                InstrumentId(f"{name}:Perp:ETHUSDT"), Side.BUY, Decimal("0.01"),
                                                False, "emergency-stop drill", 0, 0))

    def _open_journal(self) -> Journal | None:
        """The durable record of reports, orders, trading states and reconciliations (`daemon.journal`), under
        `runtime.state_dir`; a backtest, or a run without a state directory, keeps none."""
        runtime = self.config.settings.runtime
        if not runtime.state_dir or runtime.mode == "backtest":
            return None

        def failed(problem: str) -> None:
            log.critical("journal_write_failed", detail=problem)
            self.trading.halt(problem, source="journal")

        journal = Journal(Path(runtime.state_dir) / "journal.sqlite", runtime.mode, str(self.config.path),
                          time.time_ns(), on_failure=failed)
        self.trading.subscribe(lambda t: journal.record_trading_state(
            time.time_ns(), t.previous.value, t.current.value, t.source, t.reason))
        log.info("journal_opened", path=str(journal.path), run=journal.run)
        return journal

    def _with_chaos(self, actors: list[Actor]) -> list[Actor]:
        """`chaos.fail_actor` (or every actor: `chaos.storm`) fails or hangs every `fail_after_s`, `crash_count`
        times or until stopped — drills of the supervisor."""
        chaos = self.config.settings.chaos
        names = [a.name for a in actors]
        if chaos.fail_actor is not None and chaos.fail_actor not in names:
            problem = f"no actor named {chaos.fail_actor!r} (actors: {', '.join(names)})"
            raise ConfigError([ConfigProblem(str(self.config.path), "chaos.fail_actor", problem)])
        return with_chaos(actors, chaos)

    def _reconciler(self, snapshots: list[ConflatingChannel[Any]],
                    books: LosslessChannel[OrderFilled | BalancesChanged]) -> ReconcilerActor | None:
        """The venues' view is the truth: the reconciler checks the books against it, and corrects or halts."""
        if not snapshots:
            return None
        r = self.config.settings.reconcile
        return ReconcilerActor(
            snapshots[0], self.venue_stats.exchanges(self.exchanges), self.venue_stats.chain(self.chain), books,
            self.positions.board.state, self.reconciliation, r.interval_s, Decimal(str(r.halt_above_usd)),
            r.max_deferrals, self.journal,
            # Live: a transfer still moving between accounts explains its difference (never a drift).
            in_transit=self.world.live.allowances if self.world.live is not None else None,
            read_concurrently=self.world.live is not None,
            # Live: each account compared once the books have booked what it published this run; dust and a
            # relative tolerance are not drifts; the perps every positions_interval_s between full runs.
            per_account=self.world.live is not None,
            tolerance=r.tolerance() if self.world.live is not None else EXACT,
            positions_interval_s=r.positions_interval_s if self.world.live is not None else None)

    async def _reconcile_now(self) -> dict[str, Any]:
        """`basisd reconcile`: ask for a reconciliation on the next snapshot and report what it found."""
        reconciler = self.reconciler
        if reconciler is None:
            return {"ok": False, "error": "the reconciler is not running"}
        runs = self.reconciliation.runs
        reconciler.request()
        with anyio.move_on_after(self.config.settings.reconcile.startup_timeout_s):
            await reconciler.next_run()
            if self.reconciliation.runs == runs or reconciler.last is None:
                return {"ok": False, "error": "the reconciliation failed: a venue did not answer (see the log)"}
            last = reconciler.last
            return {"ok": True, "clean": last.clean, "accounts": list(last.accounts), "drifts": summarize(last.drifts),
                    "total_usd": f"{last.total_usd():.2f}"}
        return {"ok": False, "error": "no reconciliation completed in time (no market data yet, or the books never "
                                      "caught up with the venues' reports)"}

    async def _startup_reconciliation(self) -> None:
        """READY=1 only once the books have been checked against the venues (DESIGN §3). Past the timeout the
        daemon comes up HALTED: it cannot say what it holds, so it must not trade."""
        if self.reconciler is None or self.config.settings.runtime.mode == "backtest":
            return
        timeout = self.config.settings.reconcile.startup_timeout_s
        with anyio.move_on_after(timeout):
            await self.reconciler.first_done.wait()
            return
        log.error("startup_reconciliation_timed_out", timeout_s=timeout)
        self.trading.halt(f"the start-up reconciliation did not complete within {timeout:g} s", source="reconciler")

    async def _serve_control(self, *, task_status: anyio.abc.TaskStatus[Path]) -> None:
        s = self.config.settings
        path = socket_path(s.control.socket, s.runtime.state_dir, self.config.path)
        try:
            await serve_control(path, self.operator.handle, task_status=task_status)
        except (ControlError, OSError) as exc:
            # Without its control socket the daemon cannot be halted by `basisd halt`: refuse to run.
            problem = f"cannot listen on {path}: {exc}"
            raise ConfigError([ConfigProblem(str(self.config.path), "control.socket", problem)]) from None

    async def _flatten(self, reason: str) -> str:
        """The operator's flatten: the strategy's unwind of what the books hold now, sent to execution as an
        operator flatten (carried out while HALTED). Sized from the latest snapshot: an instruction that was
        in flight stops at its next step (HALTED), so the books may lag it by a step; the unwind's perp legs are
        reduce-only at the venue, and a leg that no longer fits fails and is reported, never doubled."""
        snap = self.positions.latest
        if snap is None or snap.ledger is None:
            raise FlattenRefused("the books have not been valued yet")
        view = strategy_view(snap.ledger, self.positions.board.state(), self.spec, tuple(self.exchanges),
                             TradingState.REDUCING)
        instructions = decide(Change.UNWIND, self.spec, view).instructions
        if not instructions:
            raise FlattenRefused("nothing is held")
        now = self.clock.now_ns()
        sent = []
        for n, instruction in enumerate(instructions, start=1):
            instruction_id = InstructionId(f"flatten-{now}-{n}")
            await self._execution_orders.send(ExecuteInstruction(instruction_id, instruction, now, now,
                                                                 operator_flatten=True))
            sent.append(f"{instruction_id} ({len(instruction.steps)} steps: "
                        f"{', '.join(s.action for s in instruction.steps)})")
        return "; ".join(sent)

    def _book_live_opening(self) -> None:
        """The live books: the journal's (a restart: every earlier report, each under its key), then this run's
        opening — journaled as a report of its own (`opening:run-<n>`), so the next restart's books start from it."""
        self.positions.book_history(self.world.history)
        opening = self.world.opening
        key = None
        if self.journal is not None and (opening.tokens or opening.perps or opening.reason is Reason.INITIAL_CAPITAL):
            key = opening_key(self.journal.run)
            now = self.clock.now_ns()
            venue, report_id = key.split(":", 1)
            self.journal.record_report(now, venue, key, "BalancesChanged",
                                       BalancesChanged(VenueId(venue), report_id, opening, now, now))
        self.positions.book_opening(opening, key)

    def status_report(self) -> dict[str, Any]:
        """What `basisd status` prints: trading state, positions, risk and actor health."""
        snap, risk = self.positions.latest, self.risk.assessment
        now = time.monotonic()
        return {
            "trading": {"state": self.trading.state.value, "reason": self.trading.reason,
                        "waiting_for": self.gate.reason or None},
            "market_time": datetime.fromtimestamp(self.clock.now_ns() / 1e9, UTC).isoformat(),
            "mode": self.config.mode.name, "share_class": self.config.share_class.name,
            "portfolio": None if snap is None else {
                "nav_usd": f"{snap.nav_usd:.2f}", "eth_usd": str(snap.eth_usd),
                "net_delta_eth": f"{snap.net_delta_eth:.4f}",
                # Every balance the books hold, exactly (account:token, in transit too): an operator, or a
                # chaos run, compares them with the venues' own figures.
                "balances": {key: str(amount) for key, amount in snap.cash},
                "positions": [{"instrument": p.instrument_id, "quantity": str(p.quantity),
                               "entry": f"{p.average_price:.2f}", "mark": str(p.mark_price),
                               "unrealized_pnl": f"{p.unrealized_pnl:.2f}"} for p in snap.positions]},
            "risk": None if risk is None else {
                "solvency": risk.solvency.name, "drawdown": f"{risk.drawdown:.4f}", "stale": list(risk.stale),
                "breaker": risk.breaker.name, "breaker_actions": len(self.risk.actions),
                "margin_ratios": {m.venue: f"{m.ratio:.4f}" for m in risk.margins}},
            "actors": {r.name: {"state": r.state.value, "restarts": r.restarts,
                                "heartbeat_age_s": round(min(r.heartbeat_age_s(now), 1e9), 3)}
                       for r in self.supervisor.records.values()},
            "open_orders_cancelled": self.operator.cancelled_orders,
            "reconciliation": {
                "runs": self.reconciliation.runs, "failures": self.reconciliation.failures,
                "last_market_time": None if self.reconciliation.last_ns is None else
                datetime.fromtimestamp(self.reconciliation.last_ns / 1e9, UTC).isoformat(),
                "drift_usd": {k: f"{v:.2f}" for k, v in sorted(self.reconciliation.drift_usd.items())}},
            "journal": None if self.journal is None else {
                "path": str(self.journal.path), "run": self.journal.run, "records": self.journal.appended,
                "previous_run_unclean": self.journal.previous_unclean,
                "failed": self.journal.failed or None},
            "recovery": self._recovery_status(),
        }

    def _recovery_status(self) -> dict[str, Any] | None:
        """What recovery at start-up resolved (live, with a journal to read back), for `basisd status`."""
        recovery = getattr(self.world.live, "recovery", None)
        return None if recovery is None else dict(recovery.as_dict())

    def reload(self) -> None:
        """SIGHUP: re-read the file; apply the risk thresholds, report anything else as needing a restart."""
        self.notifier.reloading()
        try:
            new = load_settings(self.config.path)
        except ConfigError as exc:
            log.error("reload_rejected", problems=[str(p) for p in exc.problems])
            self.notifier.ready("reload rejected; running with the previous thresholds")
            return
        except Exception as exc:  # a reload must never stop a trading daemon, whatever the file holds
            log.error("reload_rejected", problems=[f"{self.config.path}: {describe(exc)}"])
            self.notifier.ready("reload rejected; running with the previous thresholds")
            return
        contradicted = reload_problems(self.config, new)  # thresholds the running mode and venues cannot run with
        if contradicted:
            log.error("reload_rejected", problems=[str(p) for p in contradicted])
            self.notifier.ready("reload rejected; running with the previous thresholds")
            return
        old = self.config.settings.model_copy(update={"risk": self.risk_settings})
        changed, ignored = diff_reloadable(old, new)
        self.risk_settings = new.risk
        for key, before, after in changed:
            log.warning("threshold_reloaded", key=key, previous=before, current=after)
        if ignored:
            log.warning("reload_needs_restart", sections=ignored)
        log.info("reload_done", changed=len(changed), needs_restart=ignored)
        self.notifier.ready(f"reloaded: {len(changed)} threshold(s) changed")

    async def _watchdog(self) -> None:
        interval = watchdog_interval_s()
        if interval is None:
            return
        while True:
            if self.supervisor.heartbeats_fresh():
                self.notifier.watchdog()
            else:
                stale = self.supervisor.stale_actors()
                log.error("watchdog_withheld", stale_actors=stale)
                self.notifier.status(f"degraded: stale heartbeat from {', '.join(stale)}")
            await anyio.sleep(interval)

    async def _stop_when_replay_ends(self) -> None:
        await self.market_data.exhausted.wait()
        hours = self.config.settings.replay.hours
        if self.feed.delivered < hours:
            # The feed ended early without saying why: a run that did not cover its window is a failure.
            raise IncompleteRunError(f"the replay ended after {self.feed.delivered} of the {hours} hours of its "
                                     "window")
        # Give the pipeline a moment to settle the last bar's orders before stopping.
        await anyio.sleep(0.5)
        # No next market will close the last bar's hour: close it, and let the recorder write it (the window's
        # every hour is in the report, the last one included).
        await self.positions.close_final_hour(self.clock)
        if self.recorder is not None:
            with anyio.move_on_after(5):  # once per run, bounded: the recorder has no per-row event to wait on
                while self.recorder.rows < self.positions.hours_attributed:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        self.stop("replay finished")

    async def _stop_after(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        self.stop(f"run_for_s={seconds:g} elapsed")

    def _on_trading_state(self, t: StateTransition) -> None:
        log.warning("trading_state_changed", previous=t.previous.value, current=t.current.value,
                    reason=t.reason, source=t.source)
        self.notifier.status(f"trading {t.current.value}: {t.reason}")

    def _status_extra(self) -> dict[str, object]:
        records = self.supervisor.records.values()
        depth = max((len(ch) for ch in self.channels.values()), default=0)
        return {"restarts": sum(r.restarts for r in records), "max_queue": depth,
                "orders": sum(e.orders_received for e in self.world.simulated.values())}

    def _metric_sources(self) -> MetricSources:
        lending = next((name for name, v in self.config.venues.items() if v.kind == "lending"), "aave_v3")
        return MetricSources(
            supervisor=self.supervisor, trading=self.trading, channels=self.channels, inbox_of=self.inbox_of,
            runtime_mode=self.config.settings.runtime.mode, strategy_mode=self.config.mode.name,
            clock=self.clock, spec=self.spec, portfolio=self.positions, risk=lambda: self.status.risk,
            risk_limits=lambda: self.risk_settings.model_dump(), strategy=self.strategy, risk_gate=self.risk,
            venues=self.venue_stats, reconciliation=self.reconciliation, operator=self.operator, journal=self.journal,
            lending_venue=lending,
            liquidations=lambda: {lending: getattr(self.chain, "liquidations", 0),
                                  **{name: e.liquidations for name, e in self.world.simulated.items()}},
            gauges={
                "basisd_execution_limit_stops": (
                    "Instructions seed 004's limits stopped: refused or deferred before their first step (gas above "
                    "risk.max_gas_price_gwei, a leg past risk.max_position_usd), or timed out "
                    "(risk.instruction_timeout_s)", self._limit_stops),
                "basisd_drawdown_breaker_actions": (
                    "Drawdown breaker levels that acted (sent their unwind) since start", self._breaker_acted),
                # Live venues only (daemon.venues.request_gate): per venue and ccxt host.
                "basisd_venue_degraded": (
                    "1 while a live venue's host is degraded (5xx, maintenance): no new orders there, reduce-only "
                    "still tried", lambda: self._gate_figure("degraded")),
                "basisd_venue_gate_closed_seconds": (
                    "Seconds until a live venue's host may be asked again (a 429's Retry-After, Binance's 418 ban)",
                    lambda: self._gate_figure("closed_s")),
                "basisd_venue_requests_refused": (
                    "Requests a live venue's gate refused before sending (closed, or access lost) since start",
                    lambda: self._gate_figure("requests_refused")),
                "basisd_venue_bans_seen": (
                    "Rate limits and bans (429, 418) a live venue's host answered since start",
                    lambda: self._gate_figure("limits_seen")),
                # Live venues' private streams (daemon.venues.ccxt_streams).
                "basisd_venue_stream_healthy": (
                    "1 while a live venue's private streams are connected, subscribed and backstopped since their "
                    "last connect", lambda: self._stream_figure("healthy")),
                "basisd_venue_stream_reconnects": (
                    "Reconnects of a live venue's private streams since start (dead connections included)",
                    lambda: self._stream_figure("reconnects")),
                "basisd_venue_fills_found": (
                    "Fills first seen by each path since start: the stream, or the REST backstop (what the stream "
                    "lost or had not sent)", self._fills_by_path),
            },
        )

    def _streams(self) -> dict[str, Any]:
        live = self.world.live
        return dict(live.streams) if live is not None else {}

    def _stream_figure(self, what: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {(("venue", name),): float(stream.healthy if what == "healthy" else getattr(stream.counters, what))
                for name, stream in self._streams().items()}

    def _fills_by_path(self) -> dict[tuple[tuple[str, str], ...], float]:
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for name, stream in self._streams().items():
            out[(("venue", name), ("path", "stream"))] = float(stream.counters.fills_stream)
            out[(("venue", name), ("path", "backstop"))] = float(stream.counters.fills_backstop)
        return out

    def _halt_on_recovery(self) -> None:
        """What recovery at start-up could not settle (daemon.recovery): the run comes up HALTED, before the start-up
        gate opens and before any actor can trade, naming what differs and what the operator can do."""
        recovery = getattr(self.world.live, "recovery", None)
        reason = getattr(recovery, "halt_reason", None)
        if reason is not None:
            log.critical("recovery_halted", reason=reason)
            self.trading.halt(f"recovery at start-up: {reason}", source="recovery")

    def _halt_on_access_lost(self, reason: str) -> None:
        self.trading.halt(f"a venue refused our keys after start-up: {reason}", source="venues")

    def _gate_figure(self, what: str) -> dict[tuple[tuple[str, str], ...], float]:
        """One figure of every live venue's request gates, labelled by venue and ccxt exchange (its host)."""
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for name, exchange in self.exchanges.items():
            for exchange_id, gate in getattr(exchange, "gates", {}).items():
                key = (("venue", name), ("exchange", exchange_id))
                if what == "closed_s":
                    out[key] = gate.wait_s()
                elif what == "limits_seen":
                    out[key] = float(gate.rate_limits_seen + gate.bans_seen)
                else:
                    out[key] = float(getattr(gate, what))
        return out

    def _limit_stops(self) -> dict[tuple[tuple[str, str], ...], float]:
        return {(("kind", "refused"),): float(self.execution.refused),
                (("kind", "timed_out"),): float(self.execution.timed_out)}

    def _breaker_acted(self) -> dict[tuple[tuple[str, str], ...], float]:
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for action in self.risk.actions:
            key = (("level", str(action["level"])),)
            counts[key] = counts.get(key, 0.0) + 1
        return counts
