"""The README's main job, through the real command lines: simulate -> train -> export -> serve -> predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from benchmarks.procs import free_port, http_post_json, python_command, run_server

pytestmark = pytest.mark.e2e


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_command_lines_chain_into_a_served_model_that_matches_sklearn(tmp_path: Path) -> None:
    events, artifacts = tmp_path / "events.parquet", tmp_path / "artifacts"
    assert "simulated" in _run(
        "train", "simulate", "--users", "1200", "--days", "60", "--seed", "3", "--out", str(events)
    )
    assert "test ROC-AUC" in _run(
        "train",
        "fit",
        "--events",
        str(events),
        "--out",
        str(artifacts),
        "--assets",
        str(tmp_path / "assets"),
        "--seed",
        "3",
    )  # sessionized, no revenue
    assert "0 flips" in _run("export", "--artifacts", str(artifacts))

    table = pd.read_parquet(artifacts / "features.parquet")
    metrics = json.loads((artifacts / "metrics.json").read_text())
    test_rows = table.loc[table["split"] == "test", metrics["features"]].head(200)
    expected = joblib.load(artifacts / "model.joblib").predict_proba(test_rows.astype(np.float32))[:, 1]

    port = free_port()
    with run_server(
        python_command("-m", "server", "--model", str(artifacts / "model.onnx"), "--port", str(port)),
        port,
        tmp_path / "server.log",
    ) as server:
        status, body = http_post_json(server.url + "/predict", test_rows.to_json(orient="records").encode())
    assert status == 200
    results = json.loads(body)
    np.testing.assert_allclose([r["churn_probability"] for r in results], expected, rtol=0, atol=1e-6)
    assert [r["churn"] for r in results] == list(expected >= metrics["threshold"])
