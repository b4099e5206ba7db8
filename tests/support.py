"""What several tests share: one valid request row, one small training configuration, one small grid."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# A valid /predict body for a model on the seed features: a moderately active user.
EXAMPLE_ROW: dict[str, float] = {
    "total_events": 12,
    "total_sessions": 3,
    "avg_events_per_session": 4,
    "revenue_per_session": 1,
    "active_days": 3,
}
# The same user for a model on the behaviour features: last seen 2 days before the cutoff.
BEHAVIOUR_ROW: dict[str, float] = {**EXAMPLE_ROW, "days_since_last_event": 2}

# The server mode the real-server tests run (.ci/run runs the HTTP suites in both; see docs/operations.md).
FAST_MODE = os.environ.get("PULSE_HTTP", "fast") == "fast"

SMALL_GRID = {"n_estimators": [10], "max_depth": [4], "min_samples_leaf": [20]}


def train_config(events: Path, root: Path, **overrides: Any) -> Any:
    """A quick TrainConfig on a simulated log: outputs under ``root``, the log's own session and revenue columns."""
    from train.config import TrainConfig

    values: dict[str, Any] = {
        "events": events,
        "out": root / "artifacts",
        "session_col": "session_id",
        "revenue_col": "revenue",
        "seed": 11,
        "shap_rows": 20,
        "feature_set": "seed",  # the first version's five features, which most tests' request bodies use
    }
    return TrainConfig(**{**values, **overrides})


def use_small_grid(monkeypatch: pytest.MonkeyPatch, **grid: list[Any]) -> None:
    """Cross-validate one small forest instead of the full grid (seconds instead of tens of seconds)."""
    import train.fit

    monkeypatch.setattr(train.fit, "PARAM_GRID", {**SMALL_GRID, **grid})


def require_tool(name: str, install: str) -> str:
    """The path of a command-line tool the test drives; skip without it, but fail under CI, which installs it."""
    import os
    import shutil

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install {name} (scripts/system-deps)")
        pytest.skip(f"{name} is not installed ({install})")
    return path


def binary_outputs(response: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The JSON header of a response with binary outputs, and each binary output's values in its shape."""
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header, rest = json.loads(response.content[:length]), response.content[length:]
    tensors = []
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        tensors.append(np.frombuffer(rest[:size], dtype="<f4").reshape(output["shape"]))
        rest = rest[size:]
    assert rest == b""
    return header, tensors


@contextlib.contextmanager
def running_prometheus(
    target_port: int, folder: Path, features: Sequence[str] = ()
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real Prometheus scraping ``127.0.0.1:target_port`` every second with the repository's alert rules (and
    ``--enable-feature`` for each of ``features``); its HTTP API's base URL and its process, until the block ends."""
    prometheus = require_tool("prometheus", "apt-get install prometheus")
    rules = Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "alerts.yml"
    config = folder / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{rules}"]
scrape_configs:
  - job_name: pulse
    static_configs: [{{targets: ["127.0.0.1:{target_port}"]}}]
"""
    )
    from benchmarks.procs import free_port

    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                *(f"--enable-feature={feature}" for feature in features),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}/api/v1", process
    finally:
        process.terminate()
        process.wait(timeout=30)
