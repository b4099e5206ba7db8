"""The README's commands on a fresh clone: the main job, the drift check, batch scoring with its outcome report and
the benchmark smoke run all work, write their output to ignored folders, and leave ``git status`` clean (committed
examples change only through ``make assets``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.procs import free_port, http_post_json, run_server
from tests.support import BEHAVIOUR_ROW, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parents[1]


def _run(clone: Path, *command: str, ok: tuple[int, ...] = (0,)) -> str:
    result = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=900)
    assert result.returncode in ok, (
        f"{command}: exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    target = tmp_path_factory.mktemp("clone") / "ml-pulsechecker"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    return target


def test_readme_commands_leave_a_clean_clone(clone: Path) -> None:
    require_tool("wrk", "apt-get install wrk")
    # The main job's stages, through the Makefile, on this test run's venv (not reinstalled).
    stamps = [f"-o{VENV}/.installed-run", f"-o{VENV}/.installed-all"]
    _run(clone, "make", *stamps, f"VENV={VENV}", "export")
    python = str(VENV / "bin" / "python")
    port = free_port()
    with run_server(
        [
            python,
            "-m",
            "server",
            "--model",
            str(clone / "artifacts/model.onnx"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        port,
        clone.parent / "server.log",
    ) as server:
        status, body = http_post_json(server.url + "/predict", json.dumps(BEHAVIOUR_ROW).encode())
        assert status == 200 and 0 <= json.loads(body)["churn_probability"] <= 1

    # The drift check as the README runs it, with its default report folder.
    _run(
        clone,
        python,
        "-m",
        "train",
        "features",
        "--events",
        "data/events.parquet",
        "--out",
        "data/current.parquet",
        "--session-col",
        "session_id",
        "--revenue-col",
        "revenue",
    )
    _run(
        clone,
        python,
        "-m",
        "train",
        "drift",
        "--reference",
        "artifacts/",
        "--current",
        "data/current.parquet",
        ok=(0, 1),
    )
    assert (clone / "artifacts" / "drift" / "data_drift_report.html").is_file()

    # Batch scoring and the outcome report with their default paths, at the training cutoff (its window is covered).
    cutoff = json.loads((clone / "artifacts" / "metrics.json").read_text())["cutoff"]
    scored = _run(clone, python, "-m", "score", "run", "--events", "data/events.parquet", "--cutoff", cutoff,
                  "--session-col", "session_id", "--revenue-col", "revenue")  # fmt: skip
    assert "-> artifacts/predictions.parquet" in scored
    _run(clone, python, "-m", "score", "outcomes", "--predictions", "artifacts/predictions.parquet",
         "--events", "data/events.parquet", ok=(0, 1))  # fmt: skip
    assert (clone / "artifacts" / "outcomes" / "outcomes.md").is_file()

    # The benchmark harness's smoke run with its defaults: every scenario runs and reports.
    _run(clone, python, "-m", "benchmarks", "run", "--smoke")
    results = json.loads((clone / "benchmarks" / "results" / "latest.json").read_text())
    assert set(results["single"]) == {"ours", "original", "bare_starlette", "raw_asgi"}
    for name, entry in [*results["single"].items(), *results["ours"].items()]:
        assert entry["rps"]["median"] > 0 and entry["errors"] == 0, (name, entry["errors"])
    assert set(results["ours"]) == {
        "/predict?explain=3 [1]",
        "/predict [10]",
        "/predict [100]",
        "/predict [1000]",
        "/predict columns [1000]",
        "/v2 infer [1]",
        "/v2 infer [1000]",
        "/v2 infer binary [1000]",
        "/v2 infer binary in and out [1000]",
    }
    for runs in results["locust"].values():
        assert runs[0]["requests"] > 0 and runs[0]["failures"] == 0
    assert results["in_process"]["onnx_single_row_us"] > 0
    assert results["in_process"]["explain_rows_per_s_1000"] > 0 and results["in_process"]["shap_rows_per_s_1000"] > 0
    assert "ML-PulseChecker" in (clone / "benchmarks" / "results" / "benchmarks.md").read_text()

    assert (clone / "artifacts" / "report" / "model_card.md").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout
