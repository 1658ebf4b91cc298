"""The stress scenario's liquidations, as Prometheus sees them: `basisd_liquidations_total{venue}` from the
composition root's own metric sources, equal to the venues' counts and the backtest summary's."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import generate_latest

from daemon.backtest import overrides, run_backtest
from daemon.config import load_config
from daemon.metrics import build_registry
from tests.conftest import CONFIGS
from tests.integration.daemon_process import metric_value


def test_every_liquidation_of_the_stress_replay_is_a_metric_per_venue(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "stress.yaml", overrides(data=None, start=None, end=None, mode=None, capital=None,
                                                           out=str(tmp_path)))
    daemon, summary = run_backtest(config)
    scrape = generate_latest(build_registry(daemon._metric_sources())).decode()
    assert summary["liquidations"], summary
    for venue, count in summary["liquidations"].items():
        assert count >= 1, (venue, summary["liquidations"])  # all three exchange accounts and AAVE
        assert metric_value(scrape, "basisd_liquidations_total", venue=venue) == count, venue
