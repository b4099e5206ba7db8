"""The reliability suite's CI size, against real server processes: fuzzing, schemathesis, soak and faults.

Behaviour is asserted (no 5xx, nothing leaked, no request lost, faults survived); the soak's p99 and memory
trend are printed figures, not timed assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_reliability_suite_finds_nothing(exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "reliability.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "reliability", "--artifacts", str(exported.parent), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["fuzz"]["tried"] >= 500
    assert figures["fuzz"]["status_5xx"] == 0 and figures["fuzz"]["problems"] == []
    assert figures["schemathesis"]["passed"], figures["schemathesis"]
    assert figures["schemathesis_draining"]["passed"], figures["schemathesis_draining"]
    assert figures["soak"]["failures"] == 0 and figures["soak"]["requests"] > 0
    sigterm = figures["faults"]["sigterm_under_load"]
    assert sigterm["lost"] == 0 and sigterm["idle_lost"] == 0 and sigterm["idle_answered"] > 0
    assert sigterm["closed_by_server"] > 0  # draining told clients to reconnect elsewhere
    log = figures["faults"]["unwritable_request_log"]
    assert log["ok"] == log["requests"] and log["write_errors"] > 0
    slow = figures["faults"]["slow_clients"]
    assert slow["ok"] == slow["requests"]
    for name, outcome in figures["faults"]["bad_models"].items():
        assert outcome["exit_code"] == 2 and outcome["one_line"], name
