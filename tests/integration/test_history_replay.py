"""The full daemon replaying recorded history: proxies logged, gaps fatal when no proxy is allowed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import anyio
import pytest
import structlog
import yaml

from daemon.app import Daemon
from daemon.config import load_config
from daemon.data.bars import MissingData
from daemon.domain.messages import TradingState
from daemon.systemd import Notifier
from tests.integration.daemon_process import ROOT

DATA = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"the history directory {DATA} is not present")


def daemon_for(catalog: Path, start: str, hours: int, proxies: dict[str, str] | None = None) -> Daemon:
    replay: dict[str, object] = {"source": "history", "data_dir": str(DATA), "start": start, "hours": hours,
                                 "speed": None}
    if proxies is not None:
        replay["proxies"] = proxies
    path = catalog / "history_run.yaml"
    path.write_text(yaml.safe_dump({
        "runtime": {"mode": "replay", "status_interval_s": 60}, "metrics": {"enabled": False}, "replay": replay,
        "strategy": {"mode": "usdt_market_neutral", "share_class": "usdt", "initial_capital": 100000,
                     "venues": ["binance", "bybit", "okx", "aave_v3", "etherfi"]},
    }))
    holder: list[Daemon] = []

    async def build() -> None:
        holder.append(Daemon(load_config(path), Notifier("")))

    anyio.run(build)
    return holder[0]


def run(daemon: Daemon) -> None:
    async def main() -> None:
        with anyio.fail_after(60):
            await daemon.run()

    anyio.run(main)


def test_usdt_market_neutral_enters_and_runs_on_recorded_history_with_proxies_logged(catalog: Path) -> None:
    # 2024-09-01 .. : OKX has no data for September 2024; Binance misses 2024-09-02.
    daemon = daemon_for(catalog, "2024-08-28T00:00:00Z", 24 * 10)
    with structlog.testing.capture_logs() as logs:
        run(daemon)
    assert daemon.stop_reason == "replay finished"
    assert daemon.strategy.instructions >= 1 and daemon.strategy.failed_instructions == 0
    snapshot = daemon.positions.latest
    assert snapshot is not None
    assert abs(snapshot.net_delta_eth) < Decimal("0.1")
    assert Decimal(97_000) < snapshot.nav_usd < Decimal(103_000)
    proxied = {(e["series"], e["proxy"]) for e in logs if e["event"] == "data_proxied"}
    assert ("perp:okx:ETH", "perp:binance:ETH") in proxied
    assert ("perp:binance:ETH", "perp:bybit:ETH") in proxied
    assert ("funding:okx:ETH", "funding:binance:ETH") in proxied


def test_a_gap_with_no_proxy_allowed_stops_the_run_naming_the_series_and_the_gap(catalog: Path) -> None:
    daemon = daemon_for(catalog, "2024-08-31T10:00:00Z", 24, proxies={})
    with pytest.raises(MissingData) as caught:
        run(daemon)
    message = str(caught.value)
    # The first hole the run reaches: OKX published no funding in August 2024 (DOMAIN §7), so the 16:00
    # settlement has nothing to settle with. (Its perp candles stop at 15:00 the same day.)
    assert "funding:okx:ETH: no value at 2024-08-31 16:00 within 0 h (last value at 2024-07-31 16:00)" in message
    assert "no proxy is configured for funding:okx:ETH" in message
    assert int(caught.value.exit_code) == 65
    assert daemon.trading.state is TradingState.HALTED
