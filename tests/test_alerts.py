"""The alert rules, checked and unit-tested by Prometheus's own promtool (Debian's
`prometheus` package; .ci/run installs it): every alert fires in a test and stays silent in
another, and links a runbook section that exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus"
MONITORING = ROOT / "docs" / "operations" / "monitoring.md"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed (apt-get install prometheus; .ci/run installs it)"
    done = subprocess.run(
        [tool, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((RULES / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules_and_the_example_configuration() -> None:
    assert "SUCCESS" in promtool("check", "rules", "rules.yml")
    promtool("check", "config", "prometheus.yml")


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml")


def test_every_alert_is_tested_firing_and_silent() -> None:
    tests = yaml.safe_load((RULES / "rules_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in alerts():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} never fires in a test"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no silent case"


def test_every_alert_links_a_runbook_that_exists() -> None:
    text = MONITORING.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in text.splitlines()
        if line.startswith("#")
    }
    for rule in alerts():
        link = rule["annotations"]["runbook_url"]
        page, _, anchor = link.partition("#")
        assert page == "docs/operations/monitoring.md", link
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in monitoring.md"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_every_metric_is_documented() -> None:
    """Each metric taskql exports has its line in monitoring.md."""
    from prometheus_client import REGISTRY

    from api import metrics  # noqa: F401  (registers the API's metrics)
    from db import metrics as db_metrics

    names = {family.name for family in REGISTRY.collect() if family.name.startswith("taskql_")}
    names |= {
        family.name
        for family in db_metrics.SnapshotCollector(
            db_metrics.Snapshot(up=True, seconds=0)
        ).collect()
    }
    text = MONITORING.read_text()
    missing = sorted(n for n in names if f"`{n}" not in text)
    assert not missing, f"not in docs/operations/monitoring.md: {missing}"
