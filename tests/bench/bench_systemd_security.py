"""The exposure score `systemd-analyze security` gives the shipped units, against references.

Run from the repository root:

    .venv/bin/python tests/bench/bench_systemd_security.py

For each unit it runs `systemd-analyze security --offline=yes --no-pager FILE` (the template through an
instance, basisd@acct1.service, as systemd needs), prints the command, the overall exposure (0.0 = fully
sandboxed, 10.0 = none) with systemd's verdict, and the checks that still count against the unit with their
weight. References: a minimal unit with no sandbox at all (Type=notify, an ExecStart and a User), and the units
as committed at HEAD, so a change shows its effect. The project's limit is 2.0 (tests/integration/
test_systemd_units.py); freqtrade's shipped unit scores 9.8 UNSAFE.

This is a plain script, not a pytest test (pytest collects `test_*.py` only).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it

from machine import git_revision  # noqa: E402

LIMIT = 2.0
BARE = """[Unit]
Description=basisd with no sandbox (reference)

[Service]
Type=notify
User=basisd
ExecStart=/opt/basisd/venv/bin/basisd run --config /etc/basisd/basisd.yaml
"""


def analyze(path: Path) -> tuple[str, float, str, list[tuple[str, str]]]:
    """(command, exposure, verdict, [(check, weight)] still counted against the unit)."""
    command = ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    if not match:
        raise SystemExit(f"cannot read the exposure from:\n{result.stdout}{result.stderr}")
    failing = []
    for line in result.stdout.splitlines():
        if line.startswith("✗"):
            fields = line[1:].split()
            weight = fields[-1] if re.fullmatch(r"\d+\.\d+", fields[-1]) else ""
            failing.append((fields[0], weight))
    return " ".join(command), float(match.group(1)), match.group(2), failing


def place(directory: Path, name: str, text: str) -> Path:
    """Write a unit; a template is returned as its instance acct1 (systemd analyzes instances only)."""
    path = directory / name
    path.write_text(text)
    if name.endswith("@.service"):
        instance = directory / name.replace("@.service", "@acct1.service")
        instance.symlink_to(path)
        return instance
    return path


def committed(path: str) -> str | None:
    res = subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO, capture_output=True, text=True, timeout=10)
    return res.stdout if res.returncode == 0 else None


def main() -> int:
    if shutil.which("systemd-analyze") is None:
        print("systemd-analyze is not installed (Debian package systemd)", file=sys.stderr)
        return 1
    version = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"commit {git_revision()}; {version}")
    over = False
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[tuple[str, Path, bool]] = []
        for unit in ("basisd.service", "basisd@.service"):
            directory = Path(tmp) / "shipped"
            directory.mkdir(exist_ok=True)
            rows.append((f"systemd/{unit}", place(directory, unit, (REPO / "systemd" / unit).read_text()), True))
        for unit in ("basisd.service", "basisd@.service"):
            text = committed(f"systemd/{unit}")
            if text is not None:
                directory = Path(tmp) / "head"
                directory.mkdir(exist_ok=True)
                rows.append((f"systemd/{unit} at HEAD (reference)", place(directory, unit, text), False))
        rows.append(("minimal unit, no sandbox (reference)", place(Path(tmp), "bare.service", BARE), False))

        for label, path, limited in rows:
            command, score, verdict, failing = analyze(path)
            print(f"\n{label}\n  $ {command}\n  exposure {score:.1f} {verdict}"
                  + (f" (limit {LIMIT})" if limited else ""))
            if limited:
                over |= score > LIMIT
                print("  still counted: " + ", ".join(f"{check} {weight}" for check, weight in failing))
            else:
                print(f"  {len(failing)} checks counted against it")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
