"""The server's live PSI gauges flag the same shifted traffic that `python -m train drift` flags, and stay low on
traffic like the training data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from starlette.testclient import TestClient

from common.events import EventColumns
from server.config.settings import Settings
from server.http.app import create_app
from train.drift import run_drift
from train.pipeline import write_features
from train.simulate import SimulationConfig, simulate_events

pytestmark = pytest.mark.http


def _traffic(trained: Path, tmp_path: Path, name: str, seed: int, revenue_scale: float) -> Path:
    metrics = json.loads((trained / "metrics.json").read_text())
    events = tmp_path / f"{name}.parquet"
    simulate_events(SimulationConfig(users=1500, days=75, seed=seed, revenue_scale=revenue_scale), events)
    features = tmp_path / f"{name}-features.parquet"
    cutoff = pd.Timestamp(metrics["cutoff"]).to_pydatetime()
    write_features(events, features, EventColumns(session="session_id", revenue="revenue"), cutoff, "seed")
    return features


def _live_psi(exported: Path, features: Path) -> tuple[dict[str, float], int]:
    names = json.loads((exported.parent / "metrics.json").read_text())["features"]
    rows = pd.read_parquet(features)[names].to_dict(orient="records")
    with TestClient(create_app(Settings(model_path=exported))) as client:
        for start in range(0, len(rows), 300):
            assert client.post("/predict", json=rows[start : start + 300]).status_code == 200
        for row in rows[:50]:  # the single-row path counts too
            assert client.post("/predict", json=row).status_code == 200
        text = client.get("/metrics").text
    gauges = {name: float(v) for name, v in re.findall(r'pulse_feature_psi\{feature="(\w+)"\} (\S+)', text)}
    gauges["prediction"] = float(re.search(r"^pulse_prediction_psi (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    window = int(float(re.search(r"^pulse_drift_window_rows (\S+)$", text, re.M).group(1)))  # type: ignore[union-attr]
    assert window == len(rows) + 50
    return gauges, window


def test_shifted_revenue_crosses_0_2_in_its_gauge_only(
    exported: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shifted = _traffic(trained, tmp_path, "pricier", seed=12, revenue_scale=3.0)
    assert run_drift(trained, shifted, tmp_path / "report", 0.0) == 1  # the batch report flags it ...
    assert "revenue_per_session" in capsys.readouterr().out
    gauges, _ = _live_psi(exported, shifted)  # ... and so does the live gauge
    print("shifted PSI", gauges)
    assert gauges["revenue_per_session"] > 0.2
    assert all(value < 0.1 for name, value in gauges.items() if name not in ("revenue_per_session", "prediction"))


def test_unshifted_traffic_keeps_every_psi_under_0_1(exported: Path, trained: Path, tmp_path: Path) -> None:
    gauges, _ = _live_psi(exported, _traffic(trained, tmp_path, "same", seed=13, revenue_scale=1.0))
    print("unshifted PSI", gauges)
    assert len(gauges) == 6 and all(value < 0.1 for value in gauges.values())
