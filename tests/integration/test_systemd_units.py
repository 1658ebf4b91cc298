"""The shipped units parse, and hold the process contract the daemon implements."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon_process import ROOT

UNITS = ["basisd.service", "basisd@.service"]
pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (Debian package systemd)")


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_and_keeps_the_process_contract(unit: str, tmp_path: Path) -> None:
    text = (ROOT / "systemd" / unit).read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=78",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text, line
    # Point ExecStart at this checkout's entry point: verify insists that the binary exists.
    basisd = Path(sys.executable).with_name("basisd")
    local = tmp_path / unit
    local.write_text(text.replace("/opt/basisd/venv/bin/basisd", str(basisd)))
    target = local
    if "@" in unit:  # a template is verified through one of its instances
        target = tmp_path / "basisd@acct1.service"
        target.symlink_to(local)
    result = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
