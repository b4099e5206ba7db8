"""Live monitoring on real processes: two uvicorn workers sum their metrics exactly, and a real Prometheus scraping
a real server sees the drift alert go pending."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from benchmarks.procs import free_port, http_get, http_post_json, python_command, run_server
from common.events import EventColumns
from tests.support import running_prometheus
from train.pipeline import write_features
from train.simulate import SimulationConfig, simulate_events

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _metric(text: str, pattern: str) -> float:
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def _rows(exported: Path) -> list[dict[str, float]]:
    golden = json.loads((exported.parent / "golden_rows.json").read_text())
    return [dict(zip(golden["features"], row, strict=True)) for row in golden["inputs"]]


def test_two_workers_report_exact_totals_and_drift_rows(exported: Path, tmp_path: Path) -> None:
    port = free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--workers", "2")
    rows = _rows(exported)
    with run_server(command, port, tmp_path / "server.log", {"PULSE_DRIFT_MIN_ROWS": "1"}) as server:
        singles = batches = 0

        def send(i: int) -> None:
            assert http_post_json(server.url + "/predict", json.dumps(rows[i % len(rows)]).encode())[0] == 200

        with ThreadPoolExecutor(8) as pool:  # concurrent connections: while one worker is busy, the other accepts
            for _ in range(50):
                list(pool.map(send, range(singles, singles + 24)))
                singles += 24
                assert http_post_json(server.url + "/predict", json.dumps(rows[:10]).encode())[0] == 200
                batches += 1
                text = _settled(server.url, singles + batches)
                if len(_per_worker(text)) == 2:
                    break
        per_worker = _per_worker(text)
        assert len(per_worker) == 2, per_worker  # both workers answered
        assert str(server.process.pid) not in per_worker  # the supervisor does not serve; its workers do
        assert _metric(text, r"^pulse_drift_window_rows (\S+)$") == singles + 10 * batches
        assert _metric(text, r"^pulse_predicted_rows_total (\S+)$") == singles + 10 * batches
        assert _metric(text, r"^pulse_workers (\S+)$") == 2 and _metric(text, r"^pulse_ready (\S+)$") == 1
        stage = r'^pulse_stage_duration_seconds_count\{route="/predict",stage="inference"\} (\S+)$'
        assert _metric(text, stage) == singles + batches


def _per_worker(text: str) -> dict[str, float]:
    found = re.findall(r'pulse_worker_http_requests_total\{pid="(\d+)"\} (\S+)', text)
    return {pid: float(n) for pid, n in found if float(n) > 0}


def _settled(url: str, expected: int) -> str:
    """The scrape once every worker's snapshot has caught up (each is at most one flush, 0.5 s, old)."""
    deadline = time.monotonic() + 10
    while True:
        text = http_get(url + "/metrics")[1].decode()
        if _metric(text, r'^pulse_http_requests_total\{route="/predict",status="200"\} (\S+)$') == expected:
            return text
        assert time.monotonic() < deadline, text
        time.sleep(0.1)


def _shifted_rows(exported: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Traffic whose revenue tripled (the shift the HTTP test and `train drift` flag)."""
    metrics = json.loads((exported.parent / "metrics.json").read_text())
    events = tmp_path / "pricier.parquet"
    simulate_events(SimulationConfig(users=1200, days=75, seed=31, revenue_scale=3.0), events)
    features = tmp_path / "pricier-features.parquet"
    cutoff = pd.Timestamp(metrics["cutoff"]).to_pydatetime()
    write_features(events, features, EventColumns(session="session_id", revenue="revenue"), cutoff, "seed")
    rows: list[dict[str, Any]] = pd.read_parquet(features)[metrics["features"]].to_dict(orient="records")
    return rows


def _prometheus_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_a_real_prometheus_sees_the_drift_alert_go_pending(exported: Path, tmp_path: Path) -> None:
    rows = _shifted_rows(exported, tmp_path)
    port = free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port))
    with run_server(command, port, tmp_path / "server.log") as server:
        for start in range(0, len(rows), 200):
            assert http_post_json(server.url + "/predict", json.dumps(rows[start : start + 200]).encode())[0] == 200
        with running_prometheus(port, tmp_path) as (api, process):
            deadline = time.monotonic() + 60
            state = None
            while state not in ("pending", "firing"):
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                assert time.monotonic() < deadline, f"no drift alert within 60 s: {state}"
                time.sleep(0.5)
                try:
                    alerts = _prometheus_json(api + "/alerts")["data"]["alerts"]
                except OSError:
                    continue  # Prometheus still starting
                drift = [a for a in alerts if a["labels"]["alertname"] == "PulseFeatureDrift"]
                state = drift[0]["state"] if drift else None
            assert [a["labels"]["feature"] for a in drift] == ["revenue_per_session"]
            result = _prometheus_json(api + '/query?query=pulse_feature_psi{feature="revenue_per_session"}')
            assert float(result["data"]["result"][0]["value"][1]) > 0.2
            assert not [a for a in alerts if a["labels"]["alertname"] in ("PulseNotReady", "PulseHigh5xxRatio")]
