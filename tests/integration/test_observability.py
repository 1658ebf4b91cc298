"""The operator surface, checked end to end: the alert rules and the scrape config pass promtool (and the rules'
own unit tests), every dashboard query is valid PromQL, and every metric the dashboard and the rules read is
one the real daemon exports, with sane values once it has traded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.integration.daemon_process import DaemonProcess, metric_value

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "basisd.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not installed (Debian package `prometheus-alertmanager`)")
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
CEX = ("binance", "bybit", "okx")
# Families the dashboard or the rules read that a replay legitimately leaves without samples.
EMPTY_IN_REPLAY: dict[str, str] = {}
# Grafana's own variables, replaced by something Prometheus accepts to check the queries' syntax.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=30, check=False)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)  # a collapsed row keeps its panels inside it


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    return [str(r["expr"]) for r in rules()]


def metric_names(expr: str) -> set[str]:
    """The basisd metric names a PromQL expression reads: `basisd_` identifiers outside string literals, and
    names given as `__name__="..."` matchers."""
    named = set(re.findall(r'__name__\s*=~?\s*"(basisd_\w+)"', expr))
    code = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    return named | set(re.findall(r"(?<![\w:])basisd_[A-Za-z0-9_]+", code))


def rated_names(expr: str) -> set[str]:
    """Metric names passed to a function that only makes sense on a counter (or a histogram's series)."""
    return set(re.findall(r"\b(?:rate|irate|increase|resets)\s*\(\s*(basisd_\w+)", expr))


def test_metric_names_are_read_out_of_promql_without_labels_strings_or_functions() -> None:
    expr = ('histogram_quantile(0.99, sum by (venue, le) (rate(basisd_order_latency_seconds_bucket'
            '{instance=~"basisd_fake", job="basisd"}[1h]))) > on(job) group_left() basisd_risk_limit'
            '{limit="basisd_x"} or {__name__="basisd_named"}')
    assert metric_names(expr) == {"basisd_order_latency_seconds_bucket", "basisd_risk_limit", "basisd_named"}
    assert rated_names(expr) == {"basisd_order_latency_seconds_bucket"}


# --- static checks ---------------------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_scrape_config_and_the_rules() -> None:
    for args in (("check", "config", str(PROMETHEUS / "prometheus.yml")), ("check", "rules", str(RULES))):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(PROMETHEUS / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    recorded = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, concrete in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, concrete)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        recorded.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_and_tells_the_operator_what_to_do() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        assert summary.strip() and len(description) > 80, rule["alert"]
    alerts = {r["alert"] for r in rules()}
    for expected in ("BasisdAaveHealthFactorNearLiquidation", "BasisdMarginRatioWarning", "BasisdMarginRatioUrgent",
                     "BasisdDeltaDrift", "BasisdMarketDataStale", "BasisdReconciliationOverdue",
                     "BasisdReconciliationDrift", "BasisdActorRestartStorm", "BasisdTradingHalted", "BasisdDown",
                     "BasisdWatchdogWithheld"):
        assert expected in alerts


def test_the_dashboard_selects_its_prometheus_through_a_datasource_variable() -> None:
    """File provisioning does not resolve `__inputs` (`${DS_PROMETHEUS}` stays literal and every panel fails):
    the dashboard names its data source through a template variable instead, everywhere."""
    assert "${DS_" not in DASHBOARD.read_text()
    d = dashboard()
    assert "__inputs" not in d
    assert 36 <= d["schemaVersion"] <= 41
    variables = d["templating"]["list"]
    assert variables[0]["type"] == "datasource" and variables[0]["query"] == "prometheus"
    ds = {"type": "prometheus", "uid": "${" + variables[0]["name"] + "}"}
    for variable in variables[1:]:
        assert variable.get("datasource") == ds, variable["name"]
    ids = []
    for panel in panels(d):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == ds, panel["title"]
            assert panel["targets"] and all(t["datasource"] == ds for t in panel["targets"]), panel["title"]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in panels(d)}
    for expected in ("NAV", "Cumulative P&L by component", "Funding received", "CEX margin ratio",
                     "AAVE health factor", "AAVE LTV", "Delta (ETH)", "Drawdown", "Trading state", "Actors running",
                     "Actor queue depth", "Handler latency p99", "Channel depth / capacity", "Data age per series",
                     "Instructions per hour", "Order latency", "Venue errors per hour", "Liquidations per hour"):
        assert expected in titles


def test_the_grafana_provisioning_examples_load_the_dashboard_and_a_prometheus() -> None:
    provisioning = DASHBOARD.parent / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "basisd.yml").read_text())
    assert sources["apiVersion"] == 1
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"] and sources["datasources"][0]["url"]
    providers = yaml.safe_load((provisioning / "dashboards" / "basisd.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_every_alert_has_a_unit_test_that_sees_it_fire_and_not_fire_trading_halted_first() -> None:
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    checks = [c for t in tests for c in t.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    alerts = {r["alert"] for r in rules()}
    assert alerts - fired == set(), "alerts no test sees fire"
    assert alerts - quiet == set(), "alerts no test sees stay quiet"
    assert checks[0]["alertname"] == "BasisdTradingHalted"
    assert "BasisdLiquidation" in alerts
    assert next(r for r in rules() if r["alert"] == "BasisdLiquidation")["labels"]["severity"] == "critical"


def test_prometheus_sends_its_alerts_to_alertmanager() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (manager,) = config["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"]


@needs_amtool
def test_alertmanager_routes_critical_alerts_to_the_pager_and_warnings_elsewhere() -> None:
    assert AMTOOL is not None
    check = subprocess.run([AMTOOL, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=30,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    def receiver(*labels: str) -> str:
        assert AMTOOL is not None
        result = subprocess.run([AMTOOL, "config", "routes", "test", "--config.file", str(ALERTMANAGER), *labels],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()

    pager, warnings = receiver("severity=critical"), receiver("severity=warning")
    assert pager != warnings
    for rule in rules():
        expected = pager if rule["labels"]["severity"] == "critical" else warnings
        assert receiver(f"alertname={rule['alert']}", f"severity={rule['labels']['severity']}") == expected


# --- the real daemon ----------------------------------------------------------------------------------------


def replay_config(catalog: Path) -> Path:
    data = yaml.safe_load((catalog / "replay.yaml").read_text())
    data["runtime"]["status_interval_s"] = 0.5
    data["replay"]["speed"] = 36_000  # ten market hours a second
    data["runtime"]["state_dir"] = str(catalog.parent / "state")  # as under systemd: the journal is kept
    path = catalog / "observability.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One scrape of the real replay daemon, taken once it has entered and a few hours have been assessed."""
    tmp = tmp_path_factory.mktemp("observability")
    catalog = tmp / "configs"
    shutil.copytree(ROOT / "configs", catalog)
    proc = DaemonProcess(replay_config(catalog), tmp)
    try:
        proc.wait_ready()
        entry = proc.wait_for_event("instruction_finished", type="ENTRY", timeout_s=20)
        assert entry["completed"] is True, entry
        text = [""]

        def assessed() -> bool:
            text[0] = proc.scrape()
            hours = metric_value(text[0], "basisd_strategy_decisions_total") or 0
            return hours >= 3 and all(metric_value(text[0], "basisd_margin_ratio", venue=v) is not None for v in CEX)

        proc.wait_for(assessed, 20, "three decisions and a margin ratio per venue")
        yield text[0]
    finally:
        proc.close()


def exported(text: str) -> tuple[dict[str, str], set[str]]:
    """(family name → type, sample names) of a scrape, through prometheus-client's own parser."""
    families = list(text_string_to_metric_families(text))
    return {f.name: f.type for f in families}, {s.name for f in families for s in f.samples}


def family_of(name: str, types: dict[str, str]) -> tuple[str, str] | None:
    """The family a queried series name belongs to, and its type, or None if the daemon exports no such series
    (a counter's or histogram's bare family name is not a series: `basisd_x_total`, `basisd_x_bucket` are)."""
    if types.get(name) in ("gauge", "unknown", "untyped"):
        return name, types[name]
    for suffix, kinds in (("_total", ("counter",)), ("_bucket", ("histogram",)), ("_sum", ("histogram", "summary")),
                          ("_count", ("histogram", "summary")), ("_info", ("info",))):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and types.get(base) in kinds:
            return base, types[base]
    return None


@pytest.mark.subprocess
@pytest.mark.timeout(90)
def test_every_metric_the_dashboard_and_the_rules_read_is_exported(scrape: str) -> None:
    types, samples = exported(scrape)
    exprs = [("dashboard", e) for e in dashboard_exprs()] + [("rules.yml", e) for e in rule_exprs()]
    missing, empty, not_counters = [], [], []
    for source, expr in exprs:
        for name in metric_names(expr):
            family = family_of(name, types)
            if family is None:
                missing.append(f"{source}: {name} in {expr}")
            elif name not in samples and family[0] not in EMPTY_IN_REPLAY:
                empty.append(f"{source}: {name}")
        for name in rated_names(expr):
            family = family_of(name, types)
            if family is not None and family[1] not in ("counter", "histogram", "summary"):
                not_counters.append(f"{source}: rate/increase of the {family[1]} {name}")
    assert not missing, "queried but not exported:\n" + "\n".join(missing)
    assert not empty, "exported without samples after trading:\n" + "\n".join(sorted(set(empty)))
    assert not not_counters, "\n".join(not_counters)
    assert len({n for _, e in exprs for n in metric_names(e)}) > 40  # the parse found the queries' names at all


@pytest.mark.subprocess
@pytest.mark.timeout(90)
def test_the_new_metrics_have_sane_values_after_the_entry(scrape: str) -> None:
    def v(name: str, **labels: str) -> float:
        value = metric_value(scrape, name, **labels)
        assert value is not None, f"{name} {labels} missing"
        return value

    assert 90_000 < v("basisd_nav", currency="USDT") < 110_000
    assert v("basisd_nav", currency="USDT") == pytest.approx(v("basisd_nav_usd", currency="USD"))
    hf = v("basisd_aave_health_factor", venue="aave_v3")
    assert 1.0 < hf < 1.2  # levered to the target LTV: about 1.045
    assert v("basisd_aave_ltv_ratio", venue="aave_v3") == pytest.approx(v("basisd_aave_target_ltv_ratio",
                                                                          venue="aave_v3"), abs=0.01)
    for venue in CEX:
        assert 0.2 < v("basisd_margin_ratio", venue=venue) < 5
        assert v("basisd_order_latency_seconds_count", venue=venue) >= 1  # each venue got its perp short
        assert v("basisd_venue_errors_total", venue=venue, kind="fatal") == 0
    onchain, cex = v("basisd_delta_eth", asset="ETH", location="onchain"), v("basisd_delta_eth", asset="ETH",
                                                                             location="cex")
    assert onchain > 1 and cex < -1
    assert v("basisd_net_delta_eth", asset="ETH") == pytest.approx(onchain + cex, abs=1e-6)
    assert abs(onchain + cex) < 0.1 and v("basisd_delta_drift_ratio", asset="ETH") < 0.02
    assert v("basisd_instructions_issued_total") >= 1
    assert v("basisd_chain_transaction_latency_seconds_count", operation="atomic_leverage_entry") == 1
    assert v("basisd_pnl", component="transaction_costs", currency="USDT") < 0
    assert v("basisd_trading_state", state="ACTIVE") == 1 and v("basisd_heartbeats_fresh") == 1
    assert v("basisd_risk_limit", limit="margin_warning_ratio") == 0.2
    assert v("basisd_data_age_seconds", series="binance:Perp:ETHUSDT") >= 0
    # Reconciled at start-up and every market hour since: recent, and the books agree with every venue.
    assert v("basisd_reconciliation_runs_total") >= 1 and v("basisd_reconciliation_failures_total") == 0
    assert 0 <= v("basisd_reconciliation_age_seconds") <= 3600
    for venue in (*CEX, "wallet"):
        assert v("basisd_reconciliation_drift_usd", venue=venue) == 0
    # The journal took every report, order and reconciliation, and has not failed.
    assert v("basisd_journal_records_total") >= 20 and v("basisd_journal_failed") == 0


@pytest.mark.subprocess
@pytest.mark.timeout(90)
def test_labels_are_bounded(scrape: str) -> None:
    """No label carries an id (orders, trades, instructions), and the whole scrape stays small."""
    series = [s for f in text_string_to_metric_families(scrape) for s in f.samples if s.name.startswith("basisd_")]
    labels = {k for s in series for k in s.labels}
    assert not labels & {"order_id", "client_order_id", "trade_id", "instruction_id", "ref"}
    assert not [s for s in series if any(re.fullmatch(r"i\d+-\d+(-\d+)?", v) for v in s.labels.values())]
    assert len(series) < 1000


def concrete(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def series_of(text: str, leave_out: str | None = None) -> list[dict[str, str]]:
    """The scrape as promtool input series: each sample held for two hours, under job and instance labels."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if leave_out is not None and sample.name.startswith(leave_out):
                continue
            labels = {**sample.labels, "job": "basisd", "instance": "a:9464"}
            selector = ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
            out.append({"series": f"{sample.name}{{{selector}}}", "values": f"{sample.value}+0x120"})
    return [*out, {"series": 'up{job="basisd", instance="a:9464"}', "values": "1+0x120"}]


@needs_promtool
@pytest.mark.subprocess
@pytest.mark.timeout(90)
def test_no_panel_shows_no_data_on_a_healthy_daemon(scrape: str, tmp_path: Path) -> None:
    """Each panel's queries, evaluated by promtool over two hours of the real daemon's healthy scrape (and of
    one without a journal, as without runtime.state_dir): a panel none of whose queries returns a series would
    read "No data" where the operator should read zero."""
    empty_panel = []
    for panel in panels(dashboard()):
        exprs = [f"count({concrete(t['expr'])})" for t in panel.get("targets", [])]
        if exprs:
            empty_panel.append({"alert": f"Panel{panel['id']}NoData", "expr": f"absent({' or '.join(exprs)})",
                                "labels": {"title": panel["title"]}})
    (tmp_path / "panels.yml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": empty_panel}]}))
    tests = [{"interval": "1m", "input_series": series_of(scrape, leave_out), "alert_rule_test": [
        {"eval_time": "2h", "alertname": rule["alert"], "exp_alerts": []} for rule in empty_panel]}
        for leave_out in (None, "basisd_journal_")]
    (tmp_path / "panels_test.yml").write_text(yaml.safe_dump({
        "rule_files": ["panels.yml"], "evaluation_interval": "1m", "tests": tests}))
    result = promtool("test", "rules", str(tmp_path / "panels_test.yml"))
    shown = sorted(set(re.findall(r'title="([^"]*)"', result.stdout + result.stderr)))
    assert result.returncode == 0, f"panels with no data on a healthy daemon: {shown}\n{result.stdout[-2000:]}"
