"""The real server logs requests; the drift command reads that log and finds what moved."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.procs import free_port, http_post_json, python_command, run_server
from common.events import EventColumns
from train.pipeline import write_features
from train.simulate import SimulationConfig, simulate_events

pytestmark = pytest.mark.e2e


def test_drift_report_on_the_servers_request_log(exported: Path, tmp_path: Path) -> None:
    artifacts = exported.parent
    metrics = json.loads((artifacts / "metrics.json").read_text())
    events = tmp_path / "events.parquet"
    simulate_events(SimulationConfig(users=1500, days=75, seed=21, sessions_scale=0.3), events)
    features = tmp_path / "features.parquet"
    write_features(
        events,
        features,
        EventColumns(session="session_id", revenue="revenue"),
        pd.Timestamp(metrics["cutoff"]).to_pydatetime(),
        metrics["feature_set"],
    )
    rows = pd.read_parquet(features)[metrics["features"]].head(400)

    log = tmp_path / "logs" / "requests.jsonl"
    port = free_port()
    with run_server(
        python_command("-m", "server", "--model", str(exported), "--port", str(port)),
        port,
        tmp_path / "server.log",
        {"PULSE_REQUEST_LOG": str(log), "PULSE_DRAIN_SECONDS": "0"},
    ) as server:
        for start in range(0, len(rows), 100):
            body = rows.iloc[start : start + 100].to_json(orient="records").encode()
            assert http_post_json(server.url + "/predict", body)[0] == 200
    # The server has stopped: its log writer flushed on shutdown.
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(logged) == len(rows)

    out = tmp_path / "drift"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "drift",
            "--reference",
            str(artifacts),
            "--current",
            str(log),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.startswith("DRIFT: ")
    summary = json.loads((out / "data_drift_report.json").read_text())["summary"]
    assert "total_sessions" in summary["drifted_features"]
    assert summary["n_current"] == len(rows)
    assert "churn_probability" in {c["column"] for c in summary["columns"]}
    assert summary["prediction_drift"] is not None
