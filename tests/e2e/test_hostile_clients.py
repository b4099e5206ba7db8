"""The hostile-client suite's CI size against a real server process: every attack gets the answer a trusted
server gives (a 4xx/408/431 or a 503 with Retry-After, a close), memory and descriptors come back, the in-flight
gauge returns to 0, and liveness probes keep answering under batch load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import FAST_MODE, require_tool

pytestmark = pytest.mark.e2e


def test_hostile_clients_get_bounded_answers(exported: Path, tmp_path: Path) -> None:
    require_tool("wrk", "apt-get install wrk")
    out = tmp_path / "hostile.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "hostile", "--artifacts", str(exported.parent), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(result.stdout)
    cases = json.loads(out.read_text())["cases"]
    # Liveness under batch load is judged as a probe judges it (every answer within its 1 s timeout); the p99
    # target of 100 ms is the suite's printed figure, not a timed assertion here.
    liveness = cases.pop("batch_load_liveness")
    assert liveness["health"]["failed"] == 0 and liveness["health"]["probes"] > 0, liveness
    assert liveness["batch_errors"] == 0 and liveness["in_flight_after"] == 0, liveness
    failed = {name: case for name, case in cases.items() if not case["ok"]}
    assert not failed, json.dumps(failed, indent=1)[:4000]
    if FAST_MODE:  # stock mode has no connection limits: those cases are the fast mode's
        assert cases["streamed_header"]["status"] == 431
    else:
        assert {"streamed_header", "framing_faults"}.isdisjoint(cases)
    assert cases["held_bodies"]["refused_503"] > 0  # the budget, not luck, bounded the memory
    assert all(case["in_flight_after"] == 0 for case in cases.values())
