"""SIGHUP never stops a running daemon: whatever the file now holds, a bad one is `reload_rejected`."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml

from tests.integration.daemon_process import DaemonProcess
from tests.integration.test_process import replay_config

pytestmark = pytest.mark.subprocess

BAD_FILES = {
    "latin-1": "# r\xe9glages\n".encode("latin-1"),
    "binary": bytes(range(256)) * 4,
    "a list": b"- 1\n- 2\n",
    "billion laughs": b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                      b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                      b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
}


def test_a_reload_of_any_bad_file_is_rejected_and_the_daemon_keeps_trading(catalog: Path, tmp_path: Path) -> None:
    path = replay_config(catalog)
    good = path.read_bytes()
    proc = DaemonProcess(path, tmp_path)
    try:
        proc.wait_ready()
        for n, (what, content) in enumerate(BAD_FILES.items(), start=1):
            path.write_bytes(content)
            proc.signal(signal.SIGHUP)
            def rejected_n(n: int = n) -> bool:
                return len([e for e in proc.events() if e.get("event") == "reload_rejected"]) >= n

            proc.wait_for(rejected_n, 10, f"reload_rejected for {what}")
            assert proc.proc.poll() is None, f"the daemon died on a reload of {what}"
        rejected = [e for e in proc.events() if e.get("event") == "reload_rejected"]
        assert all(str(path) in " ".join(e["problems"]) for e in rejected)
        assert sum(len(" ".join(e["problems"])) for e in rejected) < 4000  # never an expanded input echoed
        # Still trading, and a good file is applied again.
        data = yaml.safe_load(good)
        data["risk"] = {"delta_act_fraction": 0.07}
        path.write_text(yaml.safe_dump(data))
        proc.signal(signal.SIGHUP)
        changed = proc.wait_for_event("threshold_reloaded", timeout_s=10)
        assert changed["key"] == "risk.delta_act_fraction"
        assert not [e for e in proc.events() if e.get("event") == "trading_state_changed"]
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(timeout_s=10) == 0
    finally:
        proc.close()
