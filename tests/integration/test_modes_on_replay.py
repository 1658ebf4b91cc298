"""Every combination the catalog accepts (`tests.catalog_matrix`: each mode × each share class it allows × each LST
a staking venue mints), run by the real daemon on a flat-out replay of the synthetic market and of the recorded
history. Issue 11: `eth_staking_only` on wstETH/lido passed check-config, then failed every hour with "no
wstETH/ETH oracle rate yet"; every combination must now enter, hold what its mode holds, and explain its P&L.

The windows are short (four days synthetic, two days of history from the common window's start): enough to enter
and accrue every component, and the whole matrix takes seconds. The full window is `test_full_window`'s."""

from __future__ import annotations

from collections.abc import MutableMapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from structlog.testing import capture_logs

from daemon.app import Daemon
from daemon.config import load_config
from daemon.domain.ledger import WALLET
from daemon.domain.market import ATOKEN_RESERVE
from daemon.domain.pnl import nav as nav_in
from daemon.domain.pnl import token_value_usd
from daemon.systemd import Notifier
from tests.catalog_matrix import COMBINATION_IDS, COMBINATIONS, Combination
from tests.integration.daemon_process import ROOT

DATA = ROOT.parent / "shared" / "data"
HOURS = {"synthetic": 96, "history": 48}
HISTORY_START = "2024-05-12T01:00:00Z"  # the common window's first bar: every series, wstETH's too, is there
# What a mode that cannot price its LST, or its AAVE reserve, logs on every hour it tries.
MISSING_MARKET = ("oracle rate yet", "liquidity index for", "borrow index for")


def run_replay(tmp_path: Path, combination: Combination, source: str) -> tuple[Daemon, list[MutableMapping[str, Any]]]:
    replay: dict[str, Any] = {"speed": None, "hours": HOURS[source]}
    if source == "history":
        replay.update(source="history", data_dir=str(DATA), start=HISTORY_START)
    path = tmp_path / f"{combination.id}-{source}.yaml"
    path.write_text(yaml.safe_dump({
        "runtime": {"mode": "replay", "status_interval_s": 60},
        "replay": replay,
        "metrics": {"enabled": False},
        "strategy": combination.strategy(),
    }))
    config = load_config(path)  # the catalog accepts it: that is what the matrix claims
    holder: list[Daemon] = []

    async def main() -> None:
        daemon = Daemon(config, Notifier(""))
        holder.append(daemon)
        with anyio.fail_after(120):
            await daemon.run()

    with capture_logs() as logs:
        anyio.run(main)
    return holder[0], logs


SOURCES = [pytest.param("synthetic", id="synthetic"),
           pytest.param("history", id="history", marks=pytest.mark.skipif(
               not DATA.is_dir(), reason=f"the history directory {DATA} is not present"))]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("combination", COMBINATIONS, ids=COMBINATION_IDS)
def test_every_mode_and_lst_enters_and_runs(tmp_path: Path, combination: Combination, source: str) -> None:
    daemon, logs = run_replay(tmp_path, combination, source)
    capital = combination.capital
    assert daemon.stop_reason == "replay finished"
    assert daemon.strategy.instructions >= 1
    assert daemon.strategy.failed_instructions == 0
    assert all(r.restarts == 0 for r in daemon.supervisor.records.values())
    unpriced = [e for e in logs if any(m in str(e) for m in MISSING_MARKET)]
    assert not unpriced, unpriced[:3]
    # The run stakes, supplies and values the LST its staking venue mints, and the feed published that one only.
    spec = daemon.spec
    if combination.lst is not None:
        assert (spec.lst, spec.staking_venue) == (combination.lst, combination.staking_venue)
        assert set(daemon.board.lst) == {combination.lst}
    snapshot = daemon.positions.latest
    assert snapshot is not None and snapshot.ledger is not None
    ledger = snapshot.ledger
    eth_class = combination.currency == "ETH"
    nav = snapshot.nav_usd / snapshot.eth_usd if eth_class else snapshot.nav_usd
    assert Decimal(capital) * Decimal("0.97") < nav < Decimal(capital) * Decimal("1.03"), nav  # ± costs, 2–4 days
    # Every hour was attributed, and the components explain the whole P&L of the run exactly.
    positions = daemon.positions
    assert positions.hours_attributed >= HOURS[source] - 2
    assert positions.max_abs_residual < Decimal("1e-9") * capital
    explained = sum(positions.pnl_totals.values(), Decimal(0))
    last_close = positions._step_start  # the books and market at the last hour closed
    assert last_close is not None
    final = nav_in(last_close[0], last_close[1], daemon.config.share_class.currency)
    assert abs(explained - (final - capital)) < Decimal("1e-6") * capital, (explained, final - capital)
    if daemon.config.hedged:
        # USDT share class: what is held long is hedged by perp shorts on every venue of the allocation.
        long_leg = sum((v for a, t, v in ledger.balances if t == spec.asset and a != WALLET), Decimal(0))
        shorts = sum((p.quantity for p in snapshot.positions), Decimal(0))
        if spec.asset == "ETH":
            assert abs(snapshot.net_delta_eth) < Decimal("0.05"), snapshot.net_delta_eth
        else:
            assert long_leg > 0 and abs(long_leg + shorts) <= Decimal("0.003"), (long_leg, shorts)
        assert {p.instrument_id.split(":")[0] for p in snapshot.positions} == set(spec.hedge_weights)
    else:
        assert not snapshot.positions  # an ETH share class never hedges
    # The holdings the mode is made of (an LST loop holds the LST's own aToken: awstETH for wstETH).
    if spec.staking and spec.borrowing:
        a_token = next(a for a, (reserve, _) in ATOKEN_RESERVE.items() if reserve == spec.lst)
        collateral = ledger.balance(WALLET, a_token)
        debt = ledger.balance(WALLET, "variableDebtWETH")
        assert collateral > 0 and debt > 0, (a_token, collateral, debt)
        # Levered: debt ≈ λ × collateral in value (indexes and oracle are close to their entry values here).
        rate = daemon.board.lst[spec.lst] * daemon.board.supply[spec.lst]
        assert debt * daemon.board.borrow["WETH"] > collateral * rate * Decimal("0.8")
    elif spec.staking:
        assert ledger.balance(WALLET, spec.lst) > 0
    elif spec.lending:
        assert ledger.balance(WALLET, "aWETH" if eth_class else "aUSDT") > 0


# --- and every one of them comes out: the operator's flatten, by each unwind path --------------------------------

FLATTEN_AFTER_HOURS = 12
MIN_ORDER_USD = Decimal(10)  # every venue file's min_order_usd
# Found by this test and not this part's to fix (issue 11 §3 report); it fails on every LST alike, so the LST paths
# are not the cause. Strict: the day it is fixed, its mark must go.
KNOWN_UNWIND_FAILURES = {
    ("eth_leveraged", "slow"): "sequential deleverage on the ETH class: the wallet cannot pay a REPAY's gas",
}


def unwind_cases() -> list[Any]:
    cases = []
    for c in COMBINATIONS:
        for unwind in ("fast", "slow"):
            known = KNOWN_UNWIND_FAILURES.get((c.mode, unwind))
            marks = [pytest.mark.xfail(strict=True, reason=known)] if known else []
            cases.append(pytest.param(c, unwind, id=f"{c.id}-{unwind}", marks=marks))
    return cases


@pytest.mark.parametrize(("combination", "unwind"), unwind_cases())
def test_every_mode_and_lst_flattens_back_to_its_share_class(tmp_path: Path, combination: Combination,
                                                             unwind: str) -> None:
    path = tmp_path / "run.yaml"
    strategy = combination.strategy()
    strategy["params"] = {**strategy.get("params", {}), "unwind": unwind}
    path.write_text(yaml.safe_dump({"runtime": {"mode": "replay", "status_interval_s": 60},
                                    "replay": {"speed": None, "hours": 48}, "metrics": {"enabled": False},
                                    "strategy": strategy}))
    config = load_config(path)
    holder: list[Daemon] = []
    sent: list[str] = []

    async def main() -> None:
        daemon = Daemon(config, Notifier(""))
        holder.append(daemon)

        async def flatten_once() -> None:  # after a bar, as an operator would: `basisd halt --flatten`
            if not sent and daemon.positions.hours_attributed >= FLATTEN_AFTER_HOURS:
                sent.append(await daemon.operator.halt_and_maybe_flatten("test: flatten", True))

        daemon.feed._venue_actions = (*daemon.feed._venue_actions, flatten_once)
        with anyio.fail_after(120):
            await daemon.run()

    anyio.run(main)
    daemon = holder[0]
    assert sent and sent[0].startswith("flatten-"), sent
    assert daemon.stop_reason == "replay finished"
    assert daemon.strategy.failed_instructions == 0
    snapshot = daemon.positions.latest
    assert snapshot is not None and snapshot.ledger is not None
    assert not snapshot.positions  # every perp closed
    currency = combination.currency
    # Nothing but the share class's currency is left: at most dust below the venues' minimum order (the interest
    # accrued between the hour the flatten was sized at and the hour it ran), and the USDT class's gas debt.
    last = daemon.positions._step_start
    assert last is not None
    book, market = last
    left = {(a, t): token_value_usd(a, t, v, market) for a, t, v in book.balances if v and t != currency}
    gas = left.pop((WALLET, "ETH"), Decimal(0))
    assert all(abs(usd) < MIN_ORDER_USD for usd in left.values()), left
    assert abs(gas) < Decimal("0.1") * market.price_usd("ETH"), gas
    nav = snapshot.nav_usd / snapshot.eth_usd if currency == "ETH" else snapshot.nav_usd
    capital = combination.capital
    assert Decimal(capital) * Decimal("0.97") < nav < Decimal(capital) * Decimal("1.03"), nav
