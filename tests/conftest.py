"""Shared fixtures: a small trained and exported model, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.simulate import SimulationConfig, simulate_events

    path = tmp_path_factory.mktemp("data") / "events.parquet"
    simulate_events(SimulationConfig(users=1500, days=75, seed=11), path)
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, event_log: Path) -> Path:
    """An artifacts/ folder with features.parquet, model.joblib and metrics.json."""
    from train.config import TrainConfig
    from train.pipeline import run_training

    root = tmp_path_factory.mktemp("run")
    run_training(
        TrainConfig(
            events=event_log,
            out=root / "artifacts",
            assets=root / "assets",
            session_col="session_id",
            revenue_col="revenue",
            seed=11,
            shap_rows=50,
        )
    )
    return root / "artifacts"


@pytest.fixture(scope="session")
def exported(trained: Path) -> Path:
    """``model.onnx`` (with sha256, golden rows and parity report) beside the trained artifacts."""
    from export.export import export_model

    export_model(trained)
    return trained / "model.onnx"
