"""The backtest recorder under the real supervisor: a report it cannot write fails the run, it is not restarted."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from actors.recorder import RecorderActor
from daemon.bus import LosslessChannel
from daemon.clock import VirtualClock
from daemon.config import load_config
from daemon.errors import ExitCode, OutputError
from daemon.mode_spec import mode_spec
from daemon.supervisor import RestartPolicy, Supervisor
from daemon.trading import TradingStateCell
from tests.conftest import CONFIGS


def test_an_unwritable_report_directory_fails_the_run_at_once_with_exit_73(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    out = tmp_path / "a-file" / "report"
    recorder = RecorderActor(LosslessChannel("recorder.pnl", 16), out, mode_spec(load_config(CONFIGS / "replay.yaml")),
                             ("binance",))
    trading = TradingStateCell()
    supervisor = Supervisor([recorder], clock=VirtualClock(0, None), trading=trading,
                            policy=RestartPolicy(initial_backoff_s=0.01), heartbeat_interval_s=0.05,
                            heartbeat_timeout_s=1.0, rng=random.Random(1))
    with pytest.raises(OutputError, match=f"cannot write the report in {out}") as caught:
        anyio.run(supervisor.run)
    assert int(caught.value.exit_code) == int(ExitCode.CANT_CREATE) == 73
    assert supervisor.records["recorder"].restarts == 0  # restarting would meet the same directory
    assert trading.state.value == "HALTED"
