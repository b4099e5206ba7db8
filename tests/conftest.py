"""Shared fixtures: a small trained and exported model, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import train_config

os.environ.setdefault("MPLBACKEND", "Agg")

# One hypothesis profile for every property test: reproducible, no deadline on a noisy shared machine.
# PULSE_FUZZ_EXAMPLES sizes the run (the nightly run uses 10,000).
settings.register_profile(
    "pulse",
    max_examples=int(os.environ.get("PULSE_FUZZ_EXAMPLES", "400")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("pulse")


@pytest.fixture(scope="session")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.simulate import SimulationConfig, simulate_events

    path = tmp_path_factory.mktemp("data") / "events.parquet"
    simulate_events(SimulationConfig(users=1500, days=75, seed=11), path)
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, event_log: Path) -> Path:
    """An artifacts/ folder with features.parquet, model.joblib and metrics.json (seed feature set)."""
    from train.pipeline import run_training

    root = tmp_path_factory.mktemp("run")
    run_training(train_config(event_log, root, shap_rows=50))
    return root / "artifacts"


@pytest.fixture(scope="session")
def exported(trained: Path) -> Path:
    """``model.onnx`` (with sha256, golden rows and parity report) beside the trained artifacts."""
    from export.export import export_model

    export_model(trained)
    return trained / "model.onnx"


@pytest.fixture(scope="session")
def behaviour_model(tmp_path_factory: pytest.TempPathFactory, event_log: Path) -> Path:
    """``model.onnx`` trained and exported on the default (behaviour) feature set."""
    from export.export import export_model
    from train.pipeline import run_training

    root = tmp_path_factory.mktemp("behaviour")
    run_training(train_config(event_log, root, feature_set="behaviour", shap_rows=50))
    export_model(root / "artifacts")
    return root / "artifacts" / "model.onnx"


@pytest.fixture(scope="session")
def twin_model(tmp_path_factory: pytest.TempPathFactory, event_log: Path, exported: Path) -> Path:
    """A second seed-feature ``model.onnx``: same input schema as ``exported``, another forest and version (for
    model swaps)."""
    import time

    from export.export import export_model
    from train.pipeline import run_training

    time.sleep(1.1)  # versions are named by the training's second
    root = tmp_path_factory.mktemp("twin")
    run_training(train_config(event_log, root, seed=12, shap_rows=20))
    export_model(root / "artifacts")
    return root / "artifacts" / "model.onnx"
