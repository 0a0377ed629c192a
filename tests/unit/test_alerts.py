"""Issue 12: the alert rules are valid and fire exactly where they should (promtool's own unit tests
in deploy/prometheus/alerts_test.yml), and the rules, the scrape config and the dashboard only name
metrics the shop exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "miaofa.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`: apt-get install -y prometheus)"
)
# Where the shop's metrics are declared: the API's registry and the worker's meter.
SOURCES = [
    ROOT / "api" / "http_metrics.py",
    ROOT / "miaofa" / "telemetry" / "registry.py",
    ROOT / "miaofa" / "telemetry" / "metrics.py",
    ROOT / "miaofa" / "telemetry" / "watch.py",
    ROOT / "activities" / "reconcile.py",
    ROOT / "miaofa" / "messaging" / "dispatcher.py",
]
SUFFIXES = ("_bucket", "_count", "_sum")


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_alert_rules_are_valid() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 12 rules found" in checked.stdout


@needs_promtool
def test_alert_rules_fire_where_they_should_and_only_there() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@needs_promtool
def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: counting refusals as gateway errors makes a quiet case fire."""
    rules = (
        (PROMETHEUS / "alerts.yml")
        .read_text()
        .replace('miaofa_gateway_errors_total{kind="error"}', "miaofa_gateway_errors_total")
    )
    (tmp_path / "alerts.yml").write_text(rules)
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    tested = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode == 1
    assert "alertname: MiaofaGatewayErrors" in tested.stdout + tested.stderr


@needs_promtool
def test_scrape_config_is_valid(tmp_path: Path) -> None:
    config = (PROMETHEUS / "prometheus.yml").read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    checked = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _declared() -> set[str]:
    text = "\n".join(path.read_text() for path in SOURCES)
    return set(re.findall(r'"(miaofa_[a-z_]+)"', text))


def _used(expression: str) -> set[str]:
    names = set()
    for name in re.findall(r"\b(miaofa_[a-z_]+)", expression):
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in _declared():
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alert_exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set().union(*(_used(e) for e in alert_exprs + panel_exprs))
    assert sorted(used - _declared()) == []
    # Every stage histogram is on the dashboard.
    for histogram in (
        "miaofa_paid_to_delivered_seconds",
        "miaofa_callback_lag_seconds",
        "miaofa_notify_to_delivered_seconds",
        "miaofa_order_reserve_seconds",
    ):
        assert histogram in used


def test_dashboard_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        pos = panel["gridPos"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, panel["title"]
        cells |= mine
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
