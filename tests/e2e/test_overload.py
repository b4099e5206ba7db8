"""Overload shedding at three times capacity (``python -m benchmarks overload``, short runs): with
``PULSE_MAX_IN_FLIGHT`` the extra requests get fast 503s with Retry-After, nothing times out and memory stays
flat; without it nothing is shed. The latency figures are printed, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.fast_only]


def test_a_bound_on_requests_in_flight_sheds_the_excess_with_retry_after(exported: Path, tmp_path: Path) -> None:
    require_tool("wrk", "apt-get install wrk")
    out = tmp_path / "overload.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "overload",
            "--artifacts",
            str(exported.parent),
            "--seconds",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(run.stdout)
    assert run.returncode == 0, run.stderr[-2000:]
    unbounded, bounded = json.loads(out.read_text())["conditions"]
    assert unbounded["overload"]["shed"] == 0 and unbounded["overload"]["non_2xx"] == 0
    load = bounded["overload"]
    assert load["offered_rps"] > 2 * bounded["capacity_rps"]
    assert load["timeouts"] == 0 and load["errors"] == 0 and load["failures"] == 0
    assert load["non_2xx"] > 0 and load["shed"] > 0 and load["shed_with_retry_after"] == load["shed"]
    assert load["accepted"] > 0 and load["accepted_rps"] > 0
    assert bounded["rss_mb_peak"] - bounded["rss_mb_start"] < 100
