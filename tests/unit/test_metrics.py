"""The metrics collector: figures computed at scrape time from the books, the risk reading and the ports' records."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.domain.aave import scaled_from_native
from daemon.domain.ids import ClientOrderId, InstructionId, InstrumentId, VenueId
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketBoard
from daemon.domain.messages import (
    PortfolioSnapshotted,
    PositionView,
    RiskAssessed,
    Side,
    SubmitOrder,
    TradingState,
    VenueReport,
)
from daemon.domain.pnl import COMPONENTS, FUNDING, nav_usd
from daemon.domain.risk import DrawdownBreaker
from daemon.domain.strategy import ModeSpec
from daemon.errors import NonRetryableVenueError
from daemon.metrics import BasisdCollector, MetricSources
from daemon.settings import RiskSettings
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.telemetry import ERROR_KINDS, ReconciliationRecord, VenueStats
from daemon.trading import TradingStateCell
from daemon.venues.simulated import SimulatedExchange
from daemon.venues.simulated_chain import SimulatedChain

D = Decimal
NS = 1_000_000_000
T0 = 1_717_200_000 * NS
VENUES = ("binance", "bybit", "okx")
SPEC = ModeSpec("usdt_market_neutral", "USDT", "ETH", True, True, True, True, D("0.5"), D("0.909075"), D("0.95"),
                {"binance": D("0.4"), "bybit": D("0.3"), "okx": D("0.3")}, D(1), D("0.02"), D(10))
ETH_SPEC = ModeSpec("eth_leveraged", "ETH", "ETH", True, True, True, False, D(1), D("0.909075"), D("0.95"),
                    {}, D(1), D("0.02"), D(10))


class Books:
    """The positions actor as the collector sees it: the latest snapshot, the market board and P&L totals."""

    def __init__(self, ledger: Ledger | None, ages: tuple[tuple[str, Decimal], ...] = ()) -> None:
        self.board = MarketBoard()
        self.board.ts_ns = T0
        self.board.prices = {"ETH": D(3000)}
        self.board.marks = {("binance", "ETH"): D(3003), ("bybit", "ETH"): D(2998), ("okx", "ETH"): D(3001)}
        self.board.lst = {"weETH": D("1.05")}
        self.board.supply = {"weETH": D("1.02"), "WETH": D(1)}
        self.board.borrow = {"WETH": D("1.1")}
        self.pnl_totals = dict.fromkeys(COMPONENTS, D(0)) | {FUNDING: D("12.5")}
        self.max_abs_residual = D("1e-20")
        self.latest: PortfolioSnapshotted | None = None
        if ledger is not None:
            snap, market = ledger.snapshot(), self.board.state()
            positions = tuple(PositionView(InstrumentId(f"{p.venue}:Perp:{p.instrument}"), p.quantity, p.entry_price,
                                           market.mark(p.venue, "ETH"), D(0), D(0)) for p in snap.perps)
            self.latest = PortfolioSnapshotted(
                positions, tuple((f"{a}:{t}", v) for a, t, v in snap.balances), D(3000), D(0),
                nav_usd(snap, market), 9, T0, T0, snap, ages)


class Strategy:
    decisions, instructions, failed_instructions, completed_instructions = 5, 3, 1, 2


class RiskGate:
    rejected = 2
    breaker = DrawdownBreaker(D("0.02"), D("0.04"), D("0.06"))  # restored from state_dir with its own levels


def leveraged_books(debt_eth: str = "150", shorts: str = "16.5") -> Ledger:
    """weETH collateral worth 165 ETH on AAVE against `debt_eth` of WETH debt, and ETH shorts on three venues."""
    ledger = Ledger(VENUES, gas_debt_allowed=True)
    collateral = scaled_from_native(D(165) / D("1.05"), D("1.02"))
    tokens = [TokenChange(WALLET, "aWeETH", collateral), TokenChange("binance", "USDT", D(20_000))]
    if D(debt_eth):
        tokens.append(TokenChange(WALLET, "variableDebtWETH", scaled_from_native(D(debt_eth), D("1.1"))))
    perps = tuple(PerpChange(v, "ETHUSDT", -D(shorts) * w, D(3000)) for v, w in
                  (("binance", D("0.4")), ("bybit", D("0.3")), ("okx", D("0.3"))))
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, T0, tuple(tokens), perps))
    return ledger


def sources(books: Books | None = None, spec: ModeSpec = SPEC, risk: RiskAssessed | None = None,
            venues: VenueStats | None = None, clock_ns: int = T0 + 60 * NS) -> MetricSources:
    trading = TradingStateCell()
    clock = VirtualClock(clock_ns, None)
    supervisor = Supervisor([], clock=clock, trading=trading, policy=RestartPolicy(), heartbeat_interval_s=1,
                            heartbeat_timeout_s=10, rng=random.Random(0))
    return MetricSources(
        supervisor=supervisor, trading=trading, channels={}, inbox_of={}, runtime_mode="replay",
        strategy_mode=spec.name, clock=clock, spec=spec, portfolio=books, risk=lambda: risk,
        risk_limits=lambda: RiskSettings().model_dump(), strategy=Strategy(), risk_gate=RiskGate(),
        venues=venues, reconciliation=ReconciliationRecord(T0),
    )


def scrape(s: MetricSources) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name → its samples, through the real text exposition and parser."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BasisdCollector(s))
    text = generate_latest(registry).decode()
    return {f.name: [(x.name, x.labels, x.value) for x in f.samples] for f in text_string_to_metric_families(text)}


def value(families: dict[str, list[tuple[str, dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for samples in families.values() for n, lbl, v in samples
             if n == name and labels.items() <= lbl.items()]
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


def test_aave_health_factor_ltv_and_delta_come_from_the_books_at_the_market() -> None:
    books = Books(leveraged_books(), ages=(("binance:Perp:ETHUSDT", D(0)), ("funding:okx:Perp:ETHUSDT", D(3600))))
    m = scrape(sources(books))
    collateral, debt = 165.0, 150.0  # in ETH: A·L·o and d·B
    assert value(m, "basisd_aave_collateral_eth", venue="aave_v3") == pytest.approx(collateral)
    assert value(m, "basisd_aave_debt_eth", venue="aave_v3") == pytest.approx(debt)
    assert value(m, "basisd_aave_health_factor", venue="aave_v3") == pytest.approx(0.95 * collateral / debt)
    assert value(m, "basisd_aave_ltv_ratio", venue="aave_v3") == pytest.approx(debt / collateral)
    assert value(m, "basisd_aave_target_ltv_ratio", venue="aave_v3") == pytest.approx(0.909075)
    # 15 ETH net on chain against 16.5 ETH short: −1.5 ETH, 1.5 / 16.5 of the hedge at (near) the same price
    onchain, cex = value(m, "basisd_delta_eth", asset="ETH", location="onchain"), \
        value(m, "basisd_delta_eth", asset="ETH", location="cex")
    assert onchain == pytest.approx(15.0) and cex == pytest.approx(-16.5)
    assert value(m, "basisd_net_delta_eth", asset="ETH") == pytest.approx(onchain + cex)
    hedge_usd = 16.5 * 0.4 * 3003 + 16.5 * 0.3 * 2998 + 16.5 * 0.3 * 3001
    assert value(m, "basisd_delta_drift_ratio", asset="ETH") == pytest.approx(1.5 * 3000 / hedge_usd)
    assert books.latest is not None
    assert value(m, "basisd_nav", currency="USDT") == pytest.approx(float(books.latest.nav_usd))
    assert value(m, "basisd_nav_usd", currency="USD") == pytest.approx(float(books.latest.nav_usd))
    assert value(m, "basisd_data_age_seconds", series="funding:okx:Perp:ETHUSDT") == 3600
    assert value(m, "basisd_market_data_age_seconds") == 60  # the clock is a minute past the books' market
    assert value(m, "basisd_venue_reports_booked_total") == 9
    assert value(m, "basisd_perp_position_eth", instrument="okx:Perp:ETHUSDT") == pytest.approx(-4.95)


def test_pnl_components_funding_and_counters_are_exported_in_the_share_class_currency() -> None:
    m = scrape(sources(Books(leveraged_books())))
    assert {lbl["component"] for _, lbl, _ in m["basisd_pnl"]} == set(COMPONENTS)
    assert {lbl["currency"] for _, lbl, _ in m["basisd_pnl"]} == {"USDT"}
    assert value(m, "basisd_pnl", component=FUNDING) == 12.5
    assert value(m, "basisd_funding_received", currency="USDT") == 12.5
    assert value(m, "basisd_instructions_issued_total") == 3
    assert value(m, "basisd_instructions_failed_total") == 1
    assert value(m, "basisd_instructions_executed_total") == 2
    assert value(m, "basisd_strategy_decisions_total") == 5
    assert value(m, "basisd_risk_refusals_total") == 2
    assert value(m, "basisd_risk_limit", limit="margin_urgent_ratio") == 0.15
    assert value(m, "basisd_risk_limit", limit="drawdown_reduce_fraction") == 0.02  # the breaker's, not settings'


def test_an_eth_share_class_reports_nav_in_eth() -> None:
    books = Books(leveraged_books())
    m = scrape(sources(books, spec=ETH_SPEC))
    assert books.latest is not None
    assert value(m, "basisd_nav", currency="ETH") == pytest.approx(float(books.latest.nav_usd) / 3000)
    assert {lbl["currency"] for _, lbl, _ in m["basisd_pnl"]} == {"ETH"}


def test_without_debt_there_is_no_health_factor_and_ltv_is_zero() -> None:
    m = scrape(sources(Books(leveraged_books(debt_eth="0"))))
    assert m["basisd_aave_health_factor"] == []
    assert value(m, "basisd_aave_ltv_ratio", venue="aave_v3") == 0


def test_before_the_first_snapshot_every_family_is_there_without_samples() -> None:
    m = scrape(sources(Books(None)))
    for name in ("basisd_nav", "basisd_nav_usd", "basisd_aave_health_factor", "basisd_margin_ratio",
                 "basisd_delta_eth", "basisd_data_age_seconds", "basisd_drawdown_ratio"):
        assert m[name] == [], name
    assert len(m["basisd_pnl"]) == len(COMPONENTS)  # the totals exist from the start, at zero but funding
    assert value(m, "basisd_reconciliation_runs_total") == 0
    assert value(m, "basisd_reconciliation_age_seconds") == 60  # never reconciled: counted from start-up


def test_the_risk_reading_gives_margin_per_venue_and_the_levels() -> None:
    reading = RiskAssessed(TradingState.REDUCING, "URGENT", (("binance", D("0.14")), ("okx", D("0.9"))), D("0.035"),
                           "REDUCE", D("0.002"), T0, T0)
    m = scrape(sources(Books(None), risk=reading))
    assert value(m, "basisd_margin_ratio", venue="binance") == pytest.approx(0.14)
    assert value(m, "basisd_margin_ratio", venue="okx") == pytest.approx(0.9)
    assert value(m, "basisd_solvency_level") == 2
    assert value(m, "basisd_drawdown_breaker_level") == 1
    assert value(m, "basisd_drawdown_ratio") == pytest.approx(0.035)
    assert value(m, "basisd_mark_divergence_ratio") == pytest.approx(0.002)


@pytest.mark.asyncio
async def test_the_timed_ports_record_latency_and_errors_by_kind_and_change_nothing_else() -> None:
    clock = VirtualClock(T0, None)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    exchange = SimulatedExchange("binance", clock, reports, taker_fee_bps=D(5))
    chain = SimulatedChain(clock, MarketBoard(), reports, {"binance": exchange})
    stats = VenueStats()
    timed = stats.exchanges({"binance": exchange})["binance"]
    order = SubmitOrder(ClientOrderId("i1-1"), InstructionId("i1"), InstrumentId("binance:Perp:ETHUSDT"), Side.SELL,
                        D(1), False, "OPEN_PERP_SHORT", T0, T0)
    report = await timed.submit_order(order)  # no price yet: the venue refuses it
    assert report.status == "rejected" and report.venue == VenueId("binance")
    with pytest.raises(NonRetryableVenueError, match="no ETH price"):
        await stats.chain(chain).swap_eth_to_usdt(D(1), "ref")

    m = scrape(sources(venues=stats))
    assert value(m, "basisd_order_latency_seconds_count", venue="binance") == 1
    assert value(m, "basisd_chain_transaction_latency_seconds_count", operation="swap_eth_to_usdt") == 1
    assert value(m, "basisd_venue_errors_total", venue="binance", kind="rejected") == 1
    assert value(m, "basisd_venue_errors_total", venue="chain", kind="non_retryable") == 1
    # every kind of every venue is there from the start, so the first error shows in increase()
    assert {(lbl["venue"], lbl["kind"]) for _, lbl, _ in m["basisd_venue_errors"]} == {
        (v, k) for v in ("binance", "chain") for k in ERROR_KINDS}


def test_reconciliation_age_runs_from_the_last_completed_run() -> None:
    record = ReconciliationRecord(T0)
    assert record.age_s(T0 + 7200 * NS) == 7200
    record.completed(T0 + 3600 * NS, [("binance", D("0.5"))])
    record.failed()
    assert record.age_s(T0 + 7200 * NS) == 3600
    s = sources()
    s.reconciliation = record
    m = scrape(s)
    assert value(m, "basisd_reconciliation_runs_total") == 1
    assert value(m, "basisd_reconciliation_failures_total") == 1
    assert value(m, "basisd_reconciliation_drift_usd", venue="binance") == 0.5


def test_liquidations_are_counted_per_venue_from_the_venues_own_counts() -> None:
    clock = VirtualClock(T0, None)
    reports: LosslessChannel[VenueReport] = LosslessChannel("reports", 100)
    exchanges = {v: SimulatedExchange(v, clock, reports, taker_fee_bps=D(5)) for v in VENUES}
    chain = SimulatedChain(clock, MarketBoard(), reports, exchanges)
    s = sources()
    s.liquidations = lambda: {"aave_v3": chain.liquidations, **{n: e.liquidations for n, e in exchanges.items()}}
    m = scrape(s)
    # Every venue is there at zero from the start, so the first liquidation shows in increase().
    assert {lbl["venue"]: v for _, lbl, v in m["basisd_liquidations"]} == dict.fromkeys(("aave_v3", *VENUES), 0)
    exchanges["okx"].liquidations += 1  # what check_liquidation does as it closes the account out
    chain.liquidations += 2
    m = scrape(s)
    assert value(m, "basisd_liquidations_total", venue="okx") == 1
    assert value(m, "basisd_liquidations_total", venue="aave_v3") == 2
    assert value(m, "basisd_liquidations_total", venue="binance") == 0
