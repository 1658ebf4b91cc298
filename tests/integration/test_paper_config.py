"""Paper mode: `check-config` accepts exactly what `run` accepts, both ways, and names the key of each refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.config import load_config
from daemon.errors import ConfigError

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]


def basisd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BASISD_")}
    full.update({"BASISD_METRICS__PORT": "0", "BASISD_API__PORT": "0", "BASISD_LOGGING__FORMAT": "json",
                 **(env or {})})
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A copy of the shipped configs, with one exchange whose market data paper cannot read."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    kraken = yaml.safe_load((tmp_path / "configs" / "venues" / "binance.yaml").read_text())
    kraken["name"] = "kraken"
    (tmp_path / "configs" / "venues" / "kraken.yaml").write_text(yaml.safe_dump(kraken))
    return tmp_path / "configs"


def paper(catalog: Path, **sections: dict[str, Any]) -> Path:
    data = yaml.safe_load((catalog / "paper.yaml").read_text())
    data["control"] = {"socket": str(catalog / "control.sock")}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path = catalog / f"paper-{len(list(catalog.glob('paper-*')))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


AAVE = "mode 'usdt_market_neutral' needs AAVE or staking on chain, which paper does not simulate at live prices: " \
       "paper runs btc_basis or eth_basis"
REFUSED = [
    ("aave-mode", {"strategy": {"mode": "usdt_market_neutral",
                                "venues": ["binance", "bybit", "okx", "aave_v3", "etherfi"]}}, "strategy.mode", AAVE),
    ("staking-mode", {"strategy": {"mode": "eth_staking_only", "share_class": "eth", "initial_capital": 10,
                                   "venues": ["etherfi"]}}, "strategy.mode", "needs AAVE or staking on chain"),
    ("exchange-without-market-data", {"strategy": {"venues": ["binance", "kraken"],
                                                   "params": {"hedge_allocation": {"binance": 0.5, "kraken": 0.5}}}},
     "strategy.venues[1]", "paper reads market data from binance, bybit, okx only, not 'kraken'"),
    ("poll-slower-than-staleness", {"market": {"poll_interval_s": 30}, "risk": {"data_stale_after_s": 20},
                                    "supervisor": {"heartbeat_timeout_s": 120}},
     "market.poll_interval_s", "30 s must be below risk.data_stale_after_s (20 s)"),
    ("poll-longer-than-heartbeat", {"market": {"poll_interval_s": 8, "request_timeout_s": 5}},
     "market.poll_interval_s", "8 s plus market.request_timeout_s (5 s) must be below supervisor.heartbeat_timeout_s"),
    ("gas-above-its-cap", {"market": {"paper_gas_gwei": 150}}, "market.paper_gas_gwei",
     "150 gwei is above risk.max_gas_price_gwei (100): no entry would ever start"),
    ("redirect-without-ca", {"venue_redirect": {"address": "127.0.0.1:9"}}, "venue_redirect",
     "address and ca_file go together"),
    ("redirect-off-loopback", {"venue_redirect": {"address": "10.0.0.1:443", "ca_file": "paper.yaml"}},
     "venue_redirect", "address must be on loopback"),
    ("redirect-ca-missing", {"venue_redirect": {"address": "127.0.0.1:9", "ca_file": "no-such.pem"}},
     "venue_redirect.ca_file", "no-such.pem is not a file"),
    ("redirect-ca-not-a-certificate", {"venue_redirect": {"address": "127.0.0.1:9", "ca_file": "paper.yaml"}},
     "venue_redirect.ca_file", "cannot be loaded as a PEM certificate"),
    ("poll-too-fast", {"market": {"poll_interval_s": 0.1}}, "market.poll_interval_s",
     "greater than or equal to 0.5"),
]


@pytest.mark.parametrize(("name", "sections", "key", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_what_check_config_refuses_run_refuses_with_the_same_problem(catalog: Path, name: str,
                                                                     sections: dict[str, Any], key: str,
                                                                     message: str) -> None:
    path = paper(catalog, **sections)
    checked, ran = basisd("check-config", str(path)), basisd("run", "--config", str(path))
    assert checked.returncode == ran.returncode == 78, (checked.stderr, ran.stderr)
    problem = next(line for line in checked.stderr.splitlines() if line.lstrip(" -").startswith(f"{path}: {key}"))
    assert message in problem, checked.stderr
    assert problem in ran.stderr  # the same line, word for word


def test_a_paper_run_with_no_venue_reachable_runs_on_degraded_and_stops_cleanly(catalog: Path,
                                                                                tmp_path: Path) -> None:
    from tests.fakes.exchange.tls import make_tls_material

    cert = make_tls_material(tmp_path / "tls").cert_path  # a valid certificate, for a server that is not there
    # With no market data the start-up reconciliation cannot value the books: it times out and trading comes up
    # HALTED (daemon.app); two seconds of that is enough to show.
    path = paper(catalog, venue_redirect={"address": "127.0.0.1:9", "ca_file": str(cert)},
                 runtime={"run_for_s": 4, "state_dir": str(catalog / "state")}, reconcile={"startup_timeout_s": 2})
    assert basisd("check-config", str(path)).returncode == 0
    ran = basisd("run", "--config", str(path))
    assert ran.returncode == 0, ran.stderr[-3000:]
    events = [json.loads(line) for line in (ran.stdout + ran.stderr).splitlines() if line.startswith("{")]
    degraded = sorted(e["venue"] for e in events if e.get("event") == "market_venue_degraded")
    assert degraded == ["binance", "bybit", "okx"]  # once each, however many polls failed
    assert not [e for e in events if e.get("event") == "instruction_issued"]  # no data, no decision
    assert [e["reason"] for e in events if e.get("event") == "daemon_stopped"] == ["run_for_s=4 elapsed"]


def test_paper_judges_staleness_in_seconds_unless_the_file_says_otherwise(catalog: Path) -> None:
    assert load_config(paper(catalog)).settings.risk.data_stale_after_s == 60
    assert load_config(paper(catalog)).settings.risk.funding_stale_after_s == 300
    assert load_config(paper(catalog, risk={"data_stale_after_s": 90})).settings.risk.data_stale_after_s == 90
    assert load_config(catalog / "replay.yaml").settings.risk.data_stale_after_s == 7200  # the replay's hours


LIVE_KEYS = {f"BASISD_CREDENTIALS__{v.upper()}__{k.upper()}": f"{v}-{k}-0123456789"
             for v in ("binance", "bybit", "okx") for k in ("api_key", "api_secret")} | \
    {"BASISD_CREDENTIALS__OKX__PASSPHRASE": "okx-passphrase-0123"}


def test_live_runs_the_cex_only_modes_and_names_every_key_it_lacks(catalog: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for key in LIVE_KEYS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError) as refused:
        load_config(paper(catalog, runtime={"mode": "live"}))
    text = str(refused.value)
    for key in ("credentials.binance.api_key", "credentials.bybit.api_secret", "credentials.okx.passphrase",
                "runtime.state_dir"):
        assert key in text, text
    # The variable named is the one the settings read (one underscore after the prefix, two between levels).
    assert "(env BASISD_CREDENTIALS__OKX__PASSPHRASE, or the credential file okx_passphrase)" in text, text
    for key, value in LIVE_KEYS.items():
        monkeypatch.setenv(key, value)
    config = load_config(paper(catalog, runtime={"mode": "live", "state_dir": str(catalog / "state")}))
    assert config.settings.runtime.mode == "live" and config.settings.risk.data_stale_after_s == 60
    with pytest.raises(ConfigError) as aave:
        load_config(paper(catalog, runtime={"mode": "live", "state_dir": str(catalog / "state")},
                          strategy={"mode": "usdt_market_neutral"}))
    # An AAVE mode in live trades the wallet on chain: every piece it lacks is named (the key and URL never shown).
    for key in ("chain.address_book: mode 'usdt_market_neutral' trades AAVE on chain",
                "credentials.rpc_url: live on chain needs the chain's JSON-RPC endpoint: set it (env "
                "BASISD_CREDENTIALS__RPC_URL, or the credential file rpc_url)",
                "credentials.wallet_private_key: live on chain needs the wallet's key"):
        assert key in str(aave.value), str(aave.value)
    with pytest.raises(ConfigError) as drills:
        load_config(paper(catalog, runtime={"mode": "live", "state_dir": str(catalog / "state")},
                          chaos={"resting_orders_per_venue": 1}))
    assert "chaos: the drills plant balances and orders on simulated exchanges" in str(drills.value)
