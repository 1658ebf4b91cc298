"""Cost of one hourly decision cycle for usdt_market_neutral, on the pure domain.

One cycle = ledger snapshot → exposure → strategy view → risk readings and strategy decision (REBALANCE,
which computes margin per venue, AAVE HF/LTV and the solvency priorities) → P&L attribution of the step.
The market is the deterministic synthetic one (three venues, hourly bars), the book a levered weETH position
hedged on three venues, as at entry.

    .venv/bin/python tests/bench/bench_decision_cycle.py [--hours 8760]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal

from daemon.domain.aave import atomic_entry, scaled_from_native
from daemon.domain.bars import MarketBar
from daemon.domain.exposure import compute_exposure
from daemon.domain.ledger import WALLET, ChangeSet, Ledger, PerpChange, Reason, TokenChange
from daemon.domain.market import MarketState
from daemon.domain.pnl import attribute_step
from daemon.domain.strategy import Change, ModeSpec, decide
from daemon.domain.synthetic import SyntheticMarketSpec, generate
from daemon.domain.view import strategy_view

D = Decimal
VENUES = ("binance", "bybit", "okx")
WEIGHTS = {"binance": D("0.4"), "bybit": D("0.3"), "okx": D("0.3")}


def market_of(bar: MarketBar) -> MarketState:
    return MarketState(
        bar.ts_ns, {"ETH": bar.eth_spot}, {(v, "ETH"): m for v, m in bar.perp_marks}, {bar.lst: bar.lst_eth_oracle},
        {bar.lst: bar.lst_liquidity_index, "USDT": bar.usdt_liquidity_index, "WETH": D(1)},
        {"WETH": bar.weth_borrow_index},
    )


def entered_ledger(m: MarketState, capital: Decimal) -> Ledger:
    price, o = m.price_usd("ETH"), m.lst_rate("weETH")
    long_eth = capital / 2 / price
    entry = atomic_entry(long_eth, D("0.909075"))
    ledger = Ledger(VENUES, gas_debt_allowed=True)
    ledger.apply(ChangeSet(Reason.INITIAL_CAPITAL, m.ts_ns, (
        TokenChange(WALLET, "aWeETH", scaled_from_native(entry.supplied / o, m.supply_index("weETH"))),
        TokenChange(WALLET, "variableDebtWETH", scaled_from_native(entry.borrowed, m.debt_index("WETH"))),
        *(TokenChange(v, "USDT", capital / 2 * w) for v, w in WEIGHTS.items()),
    ), tuple(PerpChange(v, "ETHUSDT", -(long_eth * w).quantize(D("0.001")), m.mark(v, "ETH"))
             for v, w in WEIGHTS.items())))
    return ledger


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=int, default=8760)
    args = parser.parse_args()
    spec = ModeSpec("usdt_market_neutral", "USDT", "ETH", True, True, True, True, D("0.5"), D("0.909075"),
                    D("0.95"), WEIGHTS, D(1), D("0.02"), D(10))
    bars = [market_of(b) for b in generate(SyntheticMarketSpec(7, datetime(2024, 6, 1, tzinfo=UTC), args.hours + 1,
                                                                VENUES))]
    ledger = entered_ledger(bars[0], D(100_000))
    timings = []
    instructions = 0
    residual = D(0)
    previous = ledger.snapshot()
    for m_prev, m in itertools.pairwise(bars):
        t0 = time.perf_counter_ns()
        snapshot = ledger.snapshot()
        compute_exposure(snapshot, m)
        view = strategy_view(snapshot, m, spec, VENUES)
        decision = decide(Change.REBALANCE, spec, view)
        step = attribute_step(previous, m_prev, snapshot, m, [])
        timings.append(time.perf_counter_ns() - t0)
        instructions += len(decision.instructions)
        residual = max(residual, abs(step.residual))
        previous = snapshot
    timings.sort()

    def p(q: float) -> float:
        return timings[int(q * (len(timings) - 1))] / 1000

    print(f"cycles: {len(timings)}  instructions issued: {instructions}  max |P&L residual|: {residual:.2E}")
    print(f"per cycle µs: mean {statistics.fmean(timings) / 1000:.1f}  p50 {p(0.5):.1f}  p99 {p(0.99):.1f}  "
          f"max {timings[-1] / 1000:.1f}")
    print(f"a year of hourly cycles: {sum(timings) / 1e9:.3f} s")


if __name__ == "__main__":
    main()
