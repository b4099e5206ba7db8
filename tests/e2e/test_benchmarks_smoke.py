"""A seconds-long run of every benchmark scenario, so the harness cannot rot (no speed thresholds here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_every_scenario_runs_and_reports(exported: Path, tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install wrk (see .ci/run)")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    out, assets = tmp_path / "results", tmp_path / "assets"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--smoke",
            "--artifacts",
            str(exported.parent),
            "--out",
            str(out),
            "--assets",
            str(assets),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "latest.json").read_text())
    assert set(results["single"]) == {"ours", "original", "bare_starlette", "raw_asgi"}
    for entry in [*results["single"].values(), *results["ours"].values()]:
        assert entry["rps"]["median"] > 0 and entry["errors"] == 0
    assert set(results["ours"]) == {
        "/predict [10]",
        "/predict [100]",
        "/predict [1000]",
        "/v2 infer [1]",
        "/v2 infer [1000]",
        "/v2 infer binary [1000]",
    }
    for runs in results["locust"].values():
        assert runs[0]["requests"] > 0 and runs[0]["failures"] == 0
    assert results["in_process"]["onnx_single_row_us"] > 0
    assert "ML-PulseChecker" in (assets / "benchmarks.md").read_text()
    for plot in ("bench_throughput.png", "bench_latency.png"):
        assert (assets / plot).stat().st_size > 1000
