"""The alert rules and scrape config are valid for the real Prometheus tools, and each alert's unit test passes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import require_tool

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


@pytest.mark.parametrize(
    "command",
    [["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]],
    ids=" ".join,
)
def test_promtool_accepts(command: list[str]) -> None:
    promtool = require_tool("promtool", "apt-get install prometheus")
    result = subprocess.run([promtool, *command], cwd=MONITORING, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert (
        alerts
        == tested
        == {
            "PulseNotReady",
            "PulseHigh5xxRatio",
            "PulseHighP99Latency",
            "PulseFeatureDrift",
            "PulsePredictionDrift",
            "PulseRequestLogDrops",
            "PulseEstimatedRocAucDrop",
        }
    )
