"""The shipped units parse, hold the process contract the daemon implements, and sandbox it tightly; the
installer lays them out with the rest, idempotently; the daemon runs under MemoryDenyWriteExecute's filter."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration import sandbox
from tests.integration.daemon_process import ROOT

UNITS = ["basisd.service", "basisd@.service"]
MAX_EXPOSURE = 2.0
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (Debian package systemd)")


def local_unit(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this checkout's entry point (verify insists that the binary exists);
    a template is reached through one of its instances."""
    basisd = Path(sys.executable).with_name("basisd")
    local = tmp_path / unit
    local.write_text((ROOT / "systemd" / unit).read_text().replace("/opt/basisd/venv/bin/basisd", str(basisd)))
    if "@" not in unit:
        return local
    instance = tmp_path / "basisd@acct1.service"
    instance.symlink_to(local)
    return instance


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_and_keeps_the_process_contract(unit: str, tmp_path: Path) -> None:
    text = (ROOT / "systemd" / unit).read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=65 66 78",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert line in text, line
    target = local_unit(unit, tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def exposure(unit_file: Path, *extra: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", *extra, str(unit_file)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) ", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1)), result


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_the_sandbox_scores_at_most_2_0_exposure(unit: str, tmp_path: Path) -> None:
    target = local_unit(unit, tmp_path)
    score, result = exposure(target)
    assert score <= MAX_EXPOSURE, result.stdout
    # systemd's own verdict agrees: --threshold is in tenths and fails above it.
    _, gated = exposure(target, f"--threshold={round(MAX_EXPOSURE * 10)}")
    assert gated.returncode == 0, gated.stdout


@needs_analyze
def test_the_score_tells_a_bare_unit_from_a_hardened_one(tmp_path: Path) -> None:
    # Guards the parsing above: a unit with no sandbox at all must score far above the limit.
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nType=notify\nExecStart={Path(sys.executable).with_name('basisd')} run\n")
    score, result = exposure(bare)
    assert score > 9.0, result.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_the_units_give_the_daemon_its_directories_and_secrets(unit: str) -> None:
    text = (ROOT / "systemd" / unit).read_text()
    name = "%i" if "@" in unit else "basisd"
    for line in (f"LoadCredential=basisd:/etc/basisd/credentials/{name}",
                 "RuntimeDirectoryMode=0750", "MemoryDenyWriteExecute=yes", "UMask=0077", "CapabilityBoundingSet=\n"):
        assert line in text, line
    state = "/var/lib/basisd" + ("/%i" if "@" in unit else "")
    assert f"StateDirectory={state.removeprefix('/var/lib/')}\n" in text
    assert f"Environment=BASISD_RUNTIME__STATE_DIR={state}\n" in text
    assert f"RuntimeDirectory={'basisd/%i' if '@' in unit else 'basisd'}\n" in text


# --- MemoryDenyWriteExecute: what the daemon and its libraries need, under the filter systemd installs ----

needs_seccomp = pytest.mark.skipif(not sandbox.supported(), reason="the filter knows x86_64 and aarch64 Linux only")
LIBRARIES = """
import asyncio, mmap
import uvloop, pydantic, yaml, structlog, prometheus_client, anyio, aiohttp, websockets
import ccxt.async_support, web3, coincurve, ckzg
from eth_account import Account
from web3 import Web3

try:  # the filter must be in force, or this test proves nothing
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    raise SystemExit("writable and executable memory was allowed: the filter is not in force")
except PermissionError:
    pass
account = Account.create()
signed = account.sign_transaction({"to": account.address, "value": 1, "gas": 21000, "maxFeePerGas": 10**9,
                                   "maxPriorityFeePerGas": 1, "nonce": 0, "chainId": 1, "type": 2})
assert Web3.keccak(signed.raw_transaction)
exchange = ccxt.async_support.binance({"apiKey": "k", "secret": "s"})
assert exchange.hmac(b"payload", b"secret")

class Order(pydantic.BaseModel):
    size: float

async def main() -> None:
    assert Order.model_validate_json('{"size": 1.5}').size == 1.5
    await asyncio.get_running_loop().getaddrinfo("localhost", 80)
    await exchange.close()

uvloop.run(main())
print("libraries ok")
"""


@needs_seccomp
@pytest.mark.subprocess
def test_the_libraries_need_no_writable_executable_memory(tmp_path: Path) -> None:
    script = tmp_path / "libraries.py"
    script.write_text(LIBRARIES)
    result = subprocess.run([sys.executable, "-m", "tests.integration.sandbox", sys.executable, str(script)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "libraries ok" in result.stdout, result.stdout + result.stderr


@needs_seccomp
@pytest.mark.subprocess
def test_the_daemon_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    env = {**os.environ, "BASISD_RUNTIME__RUN_FOR_S": "4", "BASISD_METRICS__PORT": "0", "BASISD_API__PORT": "0",
           "BASISD_LOGGING__FORMAT": "json", "BASISD_RUNTIME__STATE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "tests.integration.sandbox", sys.executable, "-m", "daemon", "run",
                             "--config", "configs/replay.yaml"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for event in ('"daemon_ready"', '"metrics_listening"', '"order_filled"', '"daemon_stopped"'):
        assert event in output, event


# --- deploy/install.sh ----------------------------------------------------------------------------------

INSTALL = ROOT / "deploy" / "install.sh"


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # PIP_NO_DEPS: the tree and the package are under test here, not pip's download of ccxt and web3.
    env = {**os.environ, "BASISD_ROOT": str(root), "PIP_NO_DEPS": "1", "BASISD_PYTHON": sys.executable}
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=240, env=env,
                          stdin=subprocess.DEVNULL)


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every path below `root`: its kind, mode and (outside the venv) content hash. pip rewrites a reinstalled
    package's record of where it came from (a temporary copy), so the venv is compared by name and mode."""
    out = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        relative = str(path.relative_to(root))
        kind = "link" if stat.S_ISLNK(info.st_mode) else "dir" if stat.S_ISDIR(info.st_mode) else "file"
        digest = ""
        if kind == "file" and not relative.startswith("opt/basisd/venv/"):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        out[relative] = (kind, stat.S_IMODE(info.st_mode), digest)
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def package_index(tmp_path_factory: pytest.TempPathFactory) -> None:
    """pip builds the package in an isolated environment and fetches setuptools for it from an index."""
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest",
                            str(tmp_path_factory.mktemp("index-probe")), "setuptools>=68", "wheel"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"no package index reachable to build the package from: {probe.stderr.strip()[-300:]}")


@pytest.mark.subprocess
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("package_index")
def test_install_lays_out_the_tree_and_a_second_run_changes_nothing_the_operator_owns(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build_dir_before = (ROOT / "build").exists()
    first = install(root)
    assert first.returncode == 0, first.stdout + first.stderr
    # Below another root it touches neither users nor systemd, and says so.
    assert "skipped: creating the basisd user and group" in first.stdout
    assert "skipped: systemctl daemon-reload" in first.stdout

    venv = root / "opt/basisd/venv"
    assert (venv / "bin/basisd").read_text().splitlines()[0] == f"#!{venv / 'bin/python'}"
    installed = subprocess.run([str(venv / "bin/python"), "-c",
                                "import daemon, importlib.metadata as m; print(m.version('basisd'), daemon.__file__)"],
                               capture_output=True, text=True, timeout=60, cwd=tmp_path)
    version, location = installed.stdout.split()
    assert version == "0.1.0" and location.startswith(str(venv)), installed.stdout + installed.stderr
    assert (ROOT / "build").exists() == build_dir_before  # built from a copy, never in the checkout

    etc = root / "etc/basisd"
    assert mode(etc) == 0o750
    assert mode(etc / "basisd.env") == 0o600
    assert (etc / "basisd.env").read_text() == (ROOT / "deploy/basisd.env.example").read_text()
    assert mode(etc / "basisd.yaml") == 0o640
    assert "catalog_dir: /opt/basisd/configs" in (etc / "basisd.yaml").read_text()
    assert (root / "opt/basisd/configs/modes/usdt_market_neutral.yaml").is_file()
    assert (root / "opt/basisd/README.md").read_text() == (ROOT / "README.md").read_text()
    for unit in UNITS:
        installed_unit = root / "etc/systemd/system" / unit
        assert installed_unit.read_text() == (ROOT / "systemd" / unit).read_text()
        assert mode(installed_unit) == 0o644
    # The credentials directory the plain unit loads is there, and private.
    (credentials,) = re.findall(r"^LoadCredential=basisd:(\S+)$", (ROOT / "systemd/basisd.service").read_text(), re.M)
    assert mode(root / credentials.lstrip("/")) == 0o700 and mode(etc / "credentials") == 0o700
    # `basisd halt --config` finds the socket where the unit's RuntimeDirectory= has the daemon put it.
    (runtime,) = re.findall(r"^RuntimeDirectory=(\S+)$", (ROOT / "systemd/basisd.service").read_text(), re.M)
    assert yaml.safe_load((etc / "basisd.yaml").read_text())["control"]["socket"] == f"/run/{runtime}/control.sock"
    # The installed config is valid against the installed catalog.
    check = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(etc / "basisd.yaml")], cwd=ROOT,
                           env={**os.environ, "BASISD_STRATEGY__CATALOG_DIR": str(root / "opt/basisd/configs")},
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr

    # The operator edits the config and adds a secret; a second run keeps both and changes nothing else.
    (etc / "basisd.yaml").write_text((etc / "basisd.yaml").read_text() + "# edited by the operator\n")
    (root / credentials.lstrip("/") / "binance_api_key").write_text("k")
    before = tree(root)
    second = install(root)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"kept {etc / 'basisd.yaml'} (exists)" in second.stdout
    assert f"kept {etc / 'basisd.env'} (exists)" in second.stdout
    assert "kept virtualenv" in second.stdout
    assert tree(root) == before


def test_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = install(root, "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[dry-run] install -m 0644" in result.stdout and "dry run: nothing was changed" in result.stdout
    assert not root.exists()


def test_the_installer_refuses_a_relative_root(tmp_path: Path) -> None:
    result = install(Path("relative/root"))
    assert result.returncode != 0 and "must be an absolute path" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (Debian package shellcheck)")
def test_the_installer_is_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
