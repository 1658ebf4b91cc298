"""Every mode, on both share classes where it allows them, run by the real daemon on a flat-out replay."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio
import pytest
import yaml

from daemon.app import Daemon
from daemon.config import load_config
from daemon.domain.ledger import WALLET
from daemon.domain.pnl import nav as nav_in
from daemon.systemd import Notifier
from tests.conftest import MODE_CASES, MODE_IDS


def run_replay(catalog: Path, mode: str, share_class: str, venues: list[str], capital: int) -> Daemon:
    path = catalog / f"{mode}_{share_class}.yaml"
    path.write_text(yaml.safe_dump({
        "runtime": {"mode": "replay", "status_interval_s": 60},
        "replay": {"speed": None, "hours": 96},
        "metrics": {"enabled": False},
        "strategy": {"mode": mode, "share_class": share_class, "venues": venues, "initial_capital": capital},
    }))
    config = load_config(path)
    holder: list[Daemon] = []

    async def main() -> None:
        daemon = Daemon(config, Notifier(""))
        holder.append(daemon)
        with anyio.fail_after(60):
            await daemon.run()

    anyio.run(main)
    return holder[0]


@pytest.mark.parametrize(("mode", "share_class", "venues", "capital"), MODE_CASES,
                         ids=MODE_IDS)
def test_mode_enters_and_runs_on_the_replay(catalog: Path, mode: str, share_class: str, venues: list[str],
                                            capital: int) -> None:
    daemon = run_replay(catalog, mode, share_class, venues, capital)
    assert daemon.stop_reason == "replay finished"
    assert daemon.strategy.instructions >= 1
    assert daemon.strategy.failed_instructions == 0
    assert all(r.restarts == 0 for r in daemon.supervisor.records.values())
    snapshot = daemon.positions.latest
    assert snapshot is not None and snapshot.ledger is not None
    ledger = snapshot.ledger
    eth_class = share_class == "eth"
    nav = snapshot.nav_usd / snapshot.eth_usd if eth_class else snapshot.nav_usd
    assert Decimal(capital) * Decimal("0.97") < nav < Decimal(capital) * Decimal("1.03"), nav  # ± costs, 4 days
    # Every hour was attributed, and the components explain the whole P&L of the run exactly.
    positions = daemon.positions
    assert positions.hours_attributed >= 90
    assert positions.max_abs_residual < Decimal("1e-9") * capital
    explained = sum(positions.pnl_totals.values(), Decimal(0))
    last_close = positions._step_start  # the books and market at the last hour closed
    assert last_close is not None
    final = nav_in(last_close[0], last_close[1], daemon.config.share_class.currency)
    assert abs(explained - (final - capital)) < Decimal("1e-6") * capital, (explained, final - capital)
    hedged = daemon.config.hedged
    if hedged:
        # USDT share class: what is held long is hedged by perp shorts on every venue of the allocation.
        asset = daemon.spec.asset
        long_leg = sum((v for a, t, v in ledger.balances if t == asset and a != WALLET), Decimal(0))
        shorts = sum((p.quantity for p in snapshot.positions), Decimal(0))
        if asset == "ETH":
            assert abs(snapshot.net_delta_eth) < Decimal("0.05"), snapshot.net_delta_eth
        else:
            assert long_leg > 0 and abs(long_leg + shorts) <= Decimal("0.003"), (long_leg, shorts)
        assert {p.instrument_id.split(":")[0] for p in snapshot.positions} == {"binance", "bybit", "okx"}
    else:
        assert not snapshot.positions  # an ETH share class never hedges
    if mode == "pure_lending":
        assert ledger.balance(WALLET, "aWETH" if eth_class else "aUSDT") > 0
    if mode in ("eth_staking_only", "usdt_market_neutral_no_leverage"):
        assert ledger.balance(WALLET, "weETH") > 0
    if mode in ("eth_leveraged", "usdt_market_neutral"):
        collateral = ledger.balance(WALLET, "aWeETH")
        debt = ledger.balance(WALLET, "variableDebtWETH")
        assert collateral > 0 and debt > 0
        # Levered: debt ≈ λ × collateral in value (indexes and oracle are close to their entry values here).
        assert debt > collateral * Decimal("0.8")
