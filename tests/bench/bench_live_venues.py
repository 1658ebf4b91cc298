"""The live world's three venues against the exchange fake: start-up, reconciliation, update → decision → order.

The fake (tests/fakes/exchange) serves Binance (USDⓈ-M + spot), Bybit v5 and OKX v5 over TLS on loopback with the
real host names, in this process; real ccxt talks to it as it would to the venues. The config is
`configs/live.yaml` with the fake's keys and `venue_redirect` in the environment, exactly as the live daemon runs
it (`live_env`, tests/integration/test_live_daemon.py); each start gets a fresh session, as a run does. ccxt's own
rate limiter stays on (`enableRateLimit`, as the live world leaves it) except where a figure says it is off; a probe
on every ccxt client times the waits in it (`throttle`) and each HTTP exchange (`fetch`), so each figure says how much
of it is the limiter's.

1. Start-up — `LiveAccounts(config, ...).start()` (every venue's start-up checks concurrently, then every account
   read): cold (empty `exchange.market_cache_dir`) and warm (filled by an earlier start), and beside each, every
   venue started alone (its `CcxtExchange.start()` + `fetch_account_detail()`, the same work `start()` does for
   it). Interleaved round by round; with a fixed latency on every request (a venue's round trip) and the limiter
   on, where "three together / slowest alone" shows whether the venues start concurrently, and on bare loopback with
   the limiter off (the CPU floor: there the venues share one process and its CPU, and have nothing to overlap).
   The requests each start makes come from the fake's request log, the market-list ones (exchangeInfo,
   instruments) apart.
2. Reconciliation — `ReconcilerActor._fetch()` (the reconciler's own read of every account, chain None) on the three
   started venues, against each venue's `fetch_account()` alone in the same round, with a fixed latency per request
   on every venue, then with one venue slower.
3. Market update → decision → order on the wire, split at component level:
   (a) the daemon deciding: `MarketBoard.update(PriceTicked)`, `strategy_view` of the positions actor's snapshot,
       `decide(next_change(...))` on an entered eth_basis book whose hedge is 0.2 ETH short of target, which yields
       a one-order DELTA_ADJUST (INCREASE_PERP_SHORT on Binance);
   (b) the daemon sending: that instruction as an `ExecuteInstruction` into the running execution actor (under the
       real supervisor, with the journal, seed 004's limits and the market board, as the daemon builds it) until
       the order request is in the fake's handler (`LoggedRequest.ts_ns`), split at the moment ccxt hands the
       signed request to aiohttp;
   (c) the fake's own handling of the order, and its answer's way back to ccxt;
   and what follows on the daemon's side: the answer parsed, the fills read back (a second request) and the
   instruction reported finished. With the limiter on (as live) and off, interleaved.

    .venv/bin/python tests/bench/bench_live_venues.py [--rounds 3] [--reconcile-rounds 5] [--orders-on 20]
        [--orders-off 100] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio
import ccxt
import structlog
from machine import cpu_model, git_revision

from actors.execution import ExecutionActor
from actors.reconciler import ReconcilerActor
from daemon.bus import ConflatingChannel, LosslessChannel
from daemon.clock import WallClock
from daemon.config import ResolvedConfig, load_config
from daemon.domain.ids import InstructionId, InstrumentId
from daemon.domain.ledger import ChangeSet, Ledger, LedgerSnapshot, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketBoard, MarketState
from daemon.domain.messages import (
    BalancesChanged,
    ExecuteInstruction,
    InstructionFinished,
    OrderEvent,
    OrderFilled,
    PortfolioSnapshotted,
    PriceTicked,
    SubmitOrder,
    VenueReport,
)
from daemon.domain.risk import RiskLimits
from daemon.domain.strategy import Instruction, ModeSpec, decide, next_change
from daemon.domain.view import strategy_view
from daemon.journal import Journal
from daemon.live_accounts import LiveAccounts
from daemon.mode_spec import mode_spec
from daemon.risk_wiring import execution_limits
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.telemetry import ReconciliationRecord
from daemon.trading import TradingStateCell
from daemon.venues.ccxt_exchange import CcxtExchange
from daemon.venues.endpoints import redirected_session
from tests.fakes.exchange.call import LoggedRequest
from tests.fakes.exchange.server import FakeExchange
from tests.integration.test_live_daemon import LIVE, live_env

D = Decimal
VENUES = ("binance", "bybit", "okx")
HOSTS = {"binance": ("fapi.binance.com", "api.binance.com"), "bybit": ("api.bybit.com",), "okx": ("www.okx.com",)}
MARKET_LISTS = ("/fapi/v1/exchangeInfo", "/api/v3/exchangeInfo", "/v5/market/instruments-info",
                "/api/v5/public/instruments")
MS = 1e6  # ns per ms


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def p50(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def venue_of(request: LoggedRequest) -> str:
    return next(v for v, hosts in HOSTS.items() if request.host in hosts)


@dataclass
class Requests:
    """The requests one start made, per venue: all of them, and the market lists among them."""

    total: dict[str, int] = field(default_factory=dict)
    lists: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, log: list[LoggedRequest]) -> Requests:
        counted = cls()
        for r in log:
            v = venue_of(r)
            counted.total[v] = counted.total.get(v, 0) + 1
            counted.lists[v] = counted.lists.get(v, 0) + (r.path in MARKET_LISTS)
        return counted

    def text(self) -> str:
        return "  ".join(f"{v} {self.total.get(v, 0)} ({self.lists.get(v, 0)} lists)" for v in VENUES
                         if v in self.total)


class Rig:
    """The fake, the live config pointed at it, and fresh sessions for each start (a run's own connections)."""

    def __init__(self, fake: FakeExchange, config: ResolvedConfig) -> None:
        self.fake = fake
        self.config = config
        self.spot_venue = config.mode.spot_venue or VENUES[0]

    def accounts(self, config: ResolvedConfig | None = None) -> tuple[LiveAccounts, Any]:
        session = redirected_session(f"127.0.0.1:{self.fake.port}", self.fake.tls.cert_path)
        reports: LosslessChannel[VenueReport] = LosslessChannel("fills.reports", 10_000)
        return LiveAccounts(config or self.config, WallClock(), reports, session=session), session


async def timed(work: Callable[[], Awaitable[Any]]) -> int:
    started = time.perf_counter_ns()
    await work()
    return time.perf_counter_ns() - started


# --- 1. start-up -----------------------------------------------------------------------------------------------------

@dataclass
class Start:
    built_ns: int
    took_ns: int
    requests: Requests
    waited_ns: dict[str, int]  # per venue: ns its requests waited in ccxt's limiter


async def one_start(rig: Rig, config: ResolvedConfig, alone: str | None, limiter: bool) -> Start:
    """All venues through `LiveAccounts.start()`, or the one named alone (its own share of that work)."""
    t0 = time.perf_counter_ns()
    accounts, session = rig.accounts(config)
    built = time.perf_counter_ns() - t0
    probe = Probe(accounts.exchanges.values())
    probe.limiter(limiter)
    before = len(rig.fake.requests)
    try:
        if alone is None:
            took = await timed(accounts.start)
        else:
            exchange = accounts.exchanges[alone]

            async def start_alone() -> None:
                await exchange.start()
                await exchange.fetch_account_detail()
            took = await timed(start_alone)
    finally:
        probe.close(exit_pause=False)
        await accounts.close()
        await session.close()
    return Start(built, took, Requests.of(rig.fake.requests[before:]),
                 {v: probe.waited(venue=v) for v in VENUES})


async def startup(rig: Rig, cold: ResolvedConfig, warm: ResolvedConfig, cold_dir: Path, rounds: int,
                  latency_s: float, limiter: bool) -> list[str]:
    fake = rig.fake
    fake.faults.clear()
    if latency_s:
        fake.faults.latency(latency_s)
    await one_start(rig, warm, None, False)  # fills the warm cache (and warms the process: imports, TLS contexts)
    kinds = [(cache, who) for cache in ("cold", "warm") for who in (None, *VENUES)]
    starts: dict[tuple[str, str | None], list[Start]] = {k: [] for k in kinds}
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]  # each kind takes every place in turn
        for cache, who in order:
            if cache == "cold":
                shutil.rmtree(cold_dir, ignore_errors=True)
            starts[(cache, who)].append(await one_start(rig, cold if cache == "cold" else warm, who, limiter))
    fake.faults.clear()
    where = f"{latency_s * 1000:g} ms added to every request" if latency_s else "loopback, no added latency"
    lim = "ccxt's rate limiter on (as live)" if limiter else "ccxt's rate limiter off"
    lines = [f"start-up of three venues, {where}, {lim}; {rounds} rounds of 8 starts, interleaved (ms):"]
    for cache in ("cold", "warm"):
        def took(who: str | None, cache: str = cache) -> list[float]:
            return [s.took_ns for s in starts[(cache, who)]]
        together = took(None)
        slowest = max(VENUES, key=lambda v: p50(took(v)))
        alone = "  ".join(f"{v} {p50(took(v)) / MS:5.0f}" for v in VENUES)
        lines.append(f"  {cache}: three together p50 {p50(together) / MS:5.0f}  max {max(together) / MS:5.0f}   "
                     f"each alone p50: {alone}   together / slowest alone ({slowest}): "
                     f"{p50(together) / p50(took(slowest)):.2f}")
        last = starts[(cache, None)][-1]
        waits = "  ".join(f"{v} {p50([s.waited_ns[v] for s in starts[(cache, None)]]) / MS:.0f}" for v in VENUES)
        lines.append(f"        requests (three together): {last.requests.text()}"
                     + (f";  limiter waits (summed over a venue's requests), p50: {waits}" if limiter else ""))
    built = [s.built_ns for ss in starts.values() for s in ss]
    lines.append(f"  building LiveAccounts (the ccxt clients, before start): p50 {p50(built) / MS:.0f} ms")
    return lines


# --- 2. reconciliation -----------------------------------------------------------------------------------------------

def reconciler(exchanges: dict[str, CcxtExchange]) -> ReconcilerActor:
    snapshots: ConflatingChannel[PortfolioSnapshotted] = ConflatingChannel("reconciler.snapshots", 1, lambda _: 0)
    books: LosslessChannel[OrderFilled | BalancesChanged] = LosslessChannel("positions.reports", 16)
    state = MarketState(0, {"ETH": D(3000)})
    return ReconcilerActor(snapshots, exchanges, None, books, lambda: state, ReconciliationRecord(0), 3600,
                           D(100))


async def reconciliation(rig: Rig, exchanges: dict[str, CcxtExchange], rounds: int, latency_s: float,
                         slow: tuple[str, float] | None) -> list[str]:
    fake = rig.fake
    fake.faults.clear()
    fake.faults.latency(latency_s)
    if slow is not None:  # latency rules add up: this venue's requests wait both
        fake.faults.latency(slow[1], host=f"{slow[0]}.com")
    actor = reconciler(exchanges)
    reads: dict[str, Callable[[], Awaitable[Any]]] = {"reconciler": actor._fetch,
                                                      **{v: exchanges[v].fetch_account for v in VENUES}}
    times: dict[str, list[float]] = {k: [] for k in reads}
    waits: dict[str, list[float]] = {v: [] for v in VENUES}  # in the reconciler's read
    await actor._fetch()  # connections open, as they are after start-up
    calls: dict[str, int] = {}
    ratios: list[float] = []
    probe = Probe(exchanges.values())
    try:
        for r in range(rounds):
            names = list(reads)
            order = names[r % len(names):] + names[:r % len(names)]
            took: dict[str, float] = {}
            for name in order:
                before, since = len(fake.requests), time.perf_counter_ns()
                took[name] = await timed(reads[name])
                times[name].append(took[name])
                calls[name] = len(fake.requests) - before
                if name == "reconciler":
                    for v in VENUES:
                        waits[v].append(probe.waited(since, venue=v))
            ratios.append(took["reconciler"] / max(took[v] for v in VENUES))
    finally:
        probe.close()
    fake.faults.clear()
    where = f"{latency_s * 1000:g} ms a request on every venue" + \
        (f", {slow[0]} {(latency_s + slow[1]) * 1000:g} ms" if slow else "")
    slowest = max(VENUES, key=lambda v: p50(times[v]))
    alone = "  ".join(f"{v} {p50(times[v]) / MS:4.0f} ({calls[v]} req)" for v in VENUES)
    waited = "  ".join(f"{v} {p50(waits[v]) / MS:.0f}" for v in VENUES)
    return [f"reconciliation of three venues, {where}, limiter on (as live); {rounds} rounds, interleaved (ms):",
            f"  reconciler _fetch p50 {p50(times['reconciler']) / MS:4.0f}  max {max(times['reconciler']) / MS:4.0f} "
            f"({calls['reconciler']} req)   each venue's fetch_account alone p50: {alone}",
            f"  reconciler / slowest alone ({slowest}): p50 of the rounds' ratios {p50(ratios):.2f}  max "
            f"{max(ratios):.2f}  (goal ≤ 1.2);  limiter waits in the reconciler's read (summed over a venue's "
            f"requests, concurrent ones overlap), p50: {waited}"]


# --- 3. market update → decision → order on the wire -----------------------------------------------------------------

def entered_book(venues: tuple[str, ...]) -> LedgerSnapshot:
    """eth_basis entered on Binance spot with 2.0 ETH and 0.6 ETH short on each venue: Binance's short (weight 0.4)
    is 0.2 ETH under target, a delta the next REBALANCE trades away with one order."""
    ledger = Ledger(venues, gas_debt_allowed=True)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, 0, (
        TokenChange("binance", "USDT", D(14_000)), TokenChange("binance", "ETH", D("2.0")),
        TokenChange("bybit", "USDT", D(10_000)), TokenChange("okx", "USDT", D(10_000))),
        tuple(PerpChange(v, "ETHUSDT", D("-0.6"), D(3000)) for v in venues)))
    return ledger.snapshot()


def decision_board(now_ns: int) -> MarketBoard:
    board = MarketBoard()
    for v in VENUES:
        board.update(PriceTicked(InstrumentId(f"{v}:Perp:ETHUSDT"), D(3000), now_ns, now_ns))
    board.update(PriceTicked(InstrumentId("binance:Spot:ETHUSDT"), D(3000), now_ns, now_ns))
    return board


def decide_once(board: MarketBoard, snapshot: LedgerSnapshot, spec: ModeSpec, venues: tuple[str, ...],
                tick: PriceTicked, limits: RiskLimits) -> Instruction:
    board.update(tick)
    view = strategy_view(snapshot, board.state(), spec, venues)
    decision = decide(next_change(spec, view), spec, view, limits=limits)
    assert len(decision.instructions) == 1 and len(decision.instructions[0].steps) == 1, decision
    return decision.instructions[0]


class Probe:
    """Times, on every ccxt client of the venues given, two moments of each request: the wait in ccxt's own rate
    limiter (`throttle`, on in live: `enableRateLimit`), and the HTTP exchange itself (`fetch`: from the signed
    request handed to aiohttp to its answer read and decoded). Instance attributes over the class's methods,
    removed by `close()`."""

    def __init__(self, exchanges: Iterable[CcxtExchange]) -> None:
        self.waits: list[tuple[str, int, int]] = []  # (venue, start ns, end ns) of each limiter wait
        self.wire: list[tuple[str, str, int, int]] = []  # (venue, url, sent ns, answered ns)
        self._patched: list[Any] = []
        for exchange in exchanges:
            for gated in exchange.ccxt_clients.values():
                self._patch(str(exchange.venue), gated.raw)

    def _patch(self, venue: str, client: Any) -> None:
        throttle, fetch = client.throttle, client.fetch

        async def timed_throttle(cost: Any = None) -> Any:
            started = time.perf_counter_ns()
            try:
                return await throttle(cost)
            finally:
                self.waits.append((venue, started, time.perf_counter_ns()))

        async def timed_fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            sent = time.perf_counter_ns()
            try:
                return await fetch(url, method, headers, body)
            finally:
                self.wire.append((venue, url, sent, time.perf_counter_ns()))
        client.throttle, client.fetch = timed_throttle, timed_fetch
        self._patched.append(client)

    def waited(self, since: int = 0, until: int | None = None, venue: str | None = None) -> int:
        """ns spent waiting in the limiter by the waits that ended in [since, until), of one venue or all."""
        return sum(e - s for v, s, e in self.waits
                   if since <= e and (until is None or e < until) and (venue is None or v == venue))

    def limiter(self, on: bool) -> None:
        for client in self._patched:
            client.enableRateLimit = on

    def close(self, exit_pause: bool = True) -> None:
        """`exit_pause` False: the clients close without ccxt's `timeout_on_exit` pause (250 ms each, one client
        after another: a second a start, outside what is timed)."""
        for client in self._patched:
            del client.throttle, client.fetch  # the class's methods again
            if not exit_pause:
                client.timeout_on_exit = 0
        self._patched.clear()


PARTS = (  # key, label, what it includes
    ("a", "(a) update + view + decide", "MarketBoard.update(PriceTicked), strategy_view, decide"),
    ("b", "(b) ExecuteInstruction → ccxt sends", "channel, actor + limits, journal intent (sqlite FULL), funding "
                                               "read, sizing, ccxt sign"),
    ("b_wait", "    of which waiting in ccxt's limiter", "the minute's weight against the venue's budget"),
    ("b_read", "    of which the funding read's round trip", "fetch_balance of the futures wallet (WalletFunding)"),
    ("b_journal", "    of which the journal's intent", "one sqlite append, synchronous=FULL (an fsync)"),
    ("b_wire", "    ccxt sends → in the fake's handler", "aiohttp + TLS out, loopback, the fake's aiohttp parse"),
    ("wire", "(a)+(b) update → order in the fake", "the issue's figure: the daemon's share + the way there"),
    ("c", "(c) the fake handles the order", "signature check, matching, JSON (the fake, not a venue)"),
    ("c_back", "    the answer's way back to ccxt", "the fake's aiohttp + TLS write, ccxt reads + decodes"),
    ("after", "after: answer → instruction finished", "parse, fills read back (1 request), report, event"),
    ("after_wait", "    of which waiting in ccxt's limiter", "the order's weight, before the fills read"),
    ("total", "end to end (update → finished)", ""),
)


async def update_to_order(rig: Rig, accounts: LiveAccounts, state_dir: Path, n_on: int, n_off: int) -> list[str]:
    fake, config = rig.fake, rig.config
    fake.faults.clear()
    fake.binance.set_balance("USDT", D(100_000_000), wallet="futures")  # N shorts of 0.2 ETH never run out of margin
    spec = mode_spec(config)
    venues = tuple(config.venues)
    r = config.settings.risk
    limits = RiskLimits(*(D(str(getattr(r, f))) for f in (
        "margin_warning_ratio", "margin_urgent_ratio", "margin_maintenance_ratio", "delta_warn_fraction",
        "delta_act_fraction", "ltv_warn_above_target", "ltv_act_above_target", "mark_divergence_flag_fraction",
        "mark_divergence_alert_fraction", "data_stale_after_s", "funding_stale_after_s")))  # as daemon.app does
    snapshot = entered_book(venues)
    board = decision_board(time.time_ns())
    clock = WallClock()
    orders: LosslessChannel[SubmitOrder | ExecuteInstruction] = LosslessChannel("execution.orders", 64)
    events: LosslessChannel[OrderEvent] = LosslessChannel("strategy.events", 64)
    journal = Journal(state_dir / "journal.sqlite", "live", str(LIVE), time.time_ns())
    appends: list[tuple[int, int]] = []  # (start ns, end ns) of each order record the actor writes
    record_order = journal.record_order

    def timed_record(*args: Any) -> None:
        started = time.perf_counter_ns()
        record_order(*args)
        appends.append((started, time.perf_counter_ns()))
    journal.record_order = timed_record  # type: ignore[method-assign, assignment]
    actor = ExecutionActor(orders, accounts.exchanges, events, None, journal,
                           limits=lambda: execution_limits(r), market=board)
    sup = Supervisor([actor], clock=clock, trading=TradingStateCell(), policy=RestartPolicy(),
                     heartbeat_interval_s=1, heartbeat_timeout_s=30, rng=random.Random(0))
    parts: dict[bool, dict[str, list[float]]] = {on: {k: [] for k, _, _ in PARTS} for on in (True, False)}
    # Limiter on and off interleaved at random (seeded), after three warm-up rounds of each.
    schedule = [True, False] * 3 + random.Random(0).sample([True] * n_on + [False] * n_off, n_on + n_off)
    probe = Probe([accounts.exchanges["binance"]])
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            for i, on in enumerate(schedule):
                probe.limiter(on)
                now = clock.now_ns()
                tick = PriceTicked(InstrumentId("binance:Perp:ETHUSDT"), D(3000) + D(i % 7) / 100, now, now)
                logged, wired = len(fake.requests), len(probe.wire)
                t0 = time.perf_counter_ns()
                instruction = decide_once(board, snapshot, spec, venues, tick, limits)
                t1 = time.perf_counter_ns()
                await orders.send(ExecuteInstruction(InstructionId(f"bench{i}"), instruction, now, now))
                while not isinstance(event := await events.receive(), InstructionFinished):
                    pass
                t_end = time.perf_counter_ns()
                assert event.completed, event
                new = fake.requests[logged:]
                at = next(k for k, q in enumerate(new) if q.method == "POST" and q.path == "/fapi/v1/order")
                order = new[at]
                calls = probe.wire[wired:]
                k = next(k for k, c in enumerate(calls) if urlsplit(c[1]).path == "/fapi/v1/order")
                _, _, sent, answered = calls[k]
                assert at == k == 1 and len(new) == 3, [(q.method, q.path) for q in new]  # read, order, fills
                if i < 6:
                    continue
                got = parts[on]
                got["a"].append(t1 - t0)
                got["b"].append(sent - t1)
                got["b_wait"].append(probe.waited(t1, sent))
                got["b_read"].append(calls[0][3] - calls[0][2])
                got["b_journal"].append(sum(e - s for s, e in appends if t1 <= s and e <= sent))
                got["b_wire"].append(order.ts_ns - sent)
                got["wire"].append(order.ts_ns - t0)
                got["c"].append(order.done_ns - order.ts_ns)
                got["c_back"].append(answered - order.done_ns)
                got["after"].append(t_end - answered)
                got["after_wait"].append(probe.waited(answered, t_end))
                got["total"].append(t_end - t0)
            tg.cancel_scope.cancel()
    finally:
        probe.close()
        probe.limiter(True)
        journal.close()
    us = 1e3
    lines = [f"market update → decision → order on the wire: one-order DELTA_ADJUSTs (INCREASE_PERP_SHORT 0.2 ETH, "
             f"Binance USDⓈ-M, FOK limit), loopback; {n_on} with ccxt's limiter on (as live), {n_off} with it off, "
             f"interleaved (µs; p99 of {n_on} is its max):",
             f"  {'':44} {'limiter on':>17}   {'limiter off':>17}",
             f"  {'':44} {'p50':>8} {'p99':>8}   {'p50':>8} {'p99':>8}   includes"]
    for key, label, what in PARTS:
        cells = "   ".join(f"{p50(parts[on][key]) / us:8.0f} {pct(parts[on][key], 0.99) / us:8.0f}"
                           for on in (True, False))
        lines.append(f"  {label:44} {cells}   {what}")
    off = parts[False]
    own = [a + b - rd for a, b, rd in zip(off["a"], off["b"], off["b_read"], strict=True)]
    lines.append(await idle_debt(accounts.exchanges["binance"]))
    lines.append(f"  the daemon's own work to the wire ((a) + (b), limiter off, less the funding read's round trip): "
                 f"p50 {p50(own) / us:.0f} µs  p99 {pct(own, 0.99) / us:.0f} µs; each instruction made 3 requests: "
                 f"the funding read, the order, the fills read")
    return lines


async def idle_debt(exchange: CcxtExchange, idle_s: float = 1.0) -> str:
    """What ccxt's limiter charges after an idle spell: a userTrades read (weight 5), `idle_s` of nothing, then one
    more request's wait in it. The adapter's rolling window (daemon.venues.ccxt_exchange.RATE_LIMITER) does not wait;
    ccxt's default leaky bucket waited 250 ms (it forgets idle time: ccxt/ccxt#25556)."""
    client = exchange.ccxt_clients["binanceusdm"].raw
    await client.fetch_my_trades("ETH/USDT:USDT", None, 1)
    await asyncio.sleep(idle_s)
    waited = await timed(client.throttle)
    return (f"  ccxt {ccxt.__version__}'s limiter after a userTrades read (weight 5) and {idle_s:g} s idle: the next "
            f"request waited {waited / MS:.0f} ms (the default leaky bucket: 250)")


async def phase(figure: Awaitable[list[str]]) -> list[str]:
    """The figure's lines, its heading saying how long it took to measure (to size N on another machine)."""
    started = time.perf_counter()
    lines = await figure
    return [f"{lines[0]}  [{time.perf_counter() - started:.0f} s]", *lines[1:]]


# --- main ------------------------------------------------------------------------------------------------------------

async def main(rounds: int, reconcile_rounds: int, orders_on: int, orders_off: int, latency_s: float) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: logs are not timed
    started = time.perf_counter()
    with TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with FakeExchange(cert_dir=root / "tls") as fake:
            os.environ.update(live_env(fake, root / "state"))
            cold_dir, warm_dir = root / "cold", root / "warm"
            # The REST start-up alone: the private streams connect on their own tasks once the accounts are read.
            cold = load_config(LIVE, {"exchange": {"market_cache_dir": str(cold_dir), "fills_stream": False}})
            warm = load_config(LIVE, {"exchange": {"market_cache_dir": str(warm_dir), "fills_stream": False}})
            rig = Rig(fake, warm)
            lines = [f"bench_live_venues.py — {cpu_model()}, commit {git_revision()}, configs/live.yaml (eth_basis, "
                     f"Binance USDⓈ-M + spot, Bybit, OKX) against the exchange fake over TLS, in process, ccxt "
                     f"{ccxt.__version__}",
                     f"command: .venv/bin/python tests/bench/bench_live_venues.py --rounds {rounds} "
                     f"--reconcile-rounds {reconcile_rounds} --orders-on {orders_on} --orders-off {orders_off} "
                     f"--latency-ms {latency_s * 1000:g}"]
            lines += await phase(startup(rig, cold, warm, cold_dir, rounds, latency_s, limiter=True))
            lines += await phase(startup(rig, cold, warm, cold_dir, rounds, 0.0, limiter=False))
            accounts, session = rig.accounts(warm)
            try:
                await accounts.start()
                exchanges = dict(accounts.exchanges)
                lines += await phase(reconciliation(rig, exchanges, reconcile_rounds, latency_s, None))
                lines += await phase(reconciliation(rig, exchanges, reconcile_rounds, latency_s,
                                                    ("bybit", 8 * latency_s)))
                lines += await phase(update_to_order(rig, accounts, root / "state", orders_on, orders_off))
            finally:
                await accounts.close()
                await session.close()
    lines.append(f"(whole bench: {time.perf_counter() - started:.0f} s)")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="start-up rounds (each: 8 starts)")
    parser.add_argument("--reconcile-rounds", type=int, default=5)
    parser.add_argument("--orders-on", type=int, default=20, help="instructions with ccxt's limiter on")
    parser.add_argument("--orders-off", type=int, default=100, help="instructions with ccxt's limiter off")
    parser.add_argument("--latency-ms", type=float, default=50, help="added to every request where a figure says so")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.reconcile_rounds, args.orders_on, args.orders_off, args.latency_ms / 1000))
