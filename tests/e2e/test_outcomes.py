"""``python -m score outcomes`` where the truth is known: the default model on fresh and on shifted simulated periods.

The default model (the README's main job: 5,000 users, 90 days, seed 7) scores users of another simulated period
at 30 days before its end; the period's own last 30 days are its labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train.simulate import SimulationConfig, simulate_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained and exported as `make run` does: the default log, the default feature set, seed 7."""
    from export.export import export_model
    from train.config import TrainConfig
    from train.pipeline import run_training

    root = tmp_path_factory.mktemp("default")
    simulate_events(SimulationConfig(users=5000, days=90, seed=7), root / "events.parquet")
    run_training(TrainConfig(events=root / "events.parquet", out=root / "artifacts", session_col="session_id",
                             revenue_col="revenue", seed=7))  # fmt: skip
    export_model(root / "artifacts")
    return root / "artifacts" / "model.onnx"


def _period(root: Path, seed: int, days: int = 90, pause_share: float = 0.0) -> tuple[Path, str]:
    """A simulated period of 5,000 users and the cutoff 30 days before its last event."""
    log = root / "period.parquet"
    simulate_events(SimulationConfig(users=5000, days=days, seed=seed, pause_share=pause_share), log)
    (last,) = duckdb.sql(f"SELECT max(event_time) FROM read_parquet('{log}')").fetchall()[0]
    return log, (last - timedelta(days=30)).isoformat()


def _score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "score", *args], capture_output=True, text=True, timeout=300, check=False
    )


def _run_and_report(root: Path, model: Path, log: Path, cutoff: str, *extra: str) -> subprocess.CompletedProcess[str]:
    predictions = root / "predictions.parquet"
    run = _score("run", "--events", str(log), "--model", str(model), "--cutoff", cutoff, "--session-col",
                 "session_id", "--revenue-col", "revenue", "--out", str(predictions), *extra)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return _score("outcomes", "--predictions", str(predictions), "--events", str(log), "--out", str(root / "report"))


def test_on_a_fresh_period_the_realized_auc_is_the_test_auc(tmp_path: Path, default_model: Path) -> None:
    log, cutoff = _period(tmp_path, seed=8)
    result = _run_and_report(tmp_path, default_model, log, cutoff)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads((tmp_path / "report" / "outcomes.json").read_text())
    assert figures["label_days"] == 30  # the model's own training window, read from the run record
    assert figures["realized"]["roc_auc"] == pytest.approx(figures["test"]["roc_auc"], abs=0.03)
    assert figures["degraded"] is False and result.stdout.startswith("ok: realized ROC-AUC")
    assert "| ROC-AUC |" in (tmp_path / "report" / "outcomes.md").read_text()
    assert (tmp_path / "report" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # What score run expected before any label (CBPE), beside what the labels realized: close on an unshifted period.
    estimate = json.loads((tmp_path / "predictions.parquet.estimate.json").read_text())
    assert estimate["estimated"] == figures["estimated"] and estimate["rows"] == figures["users"]
    assert figures["estimate_error"] == pytest.approx(figures["estimated"]["roc_auc"] - figures["realized"]["roc_auc"])
    assert abs(figures["estimate_error"]) < 0.03
    assert "Estimated when scored, before any label (CBPE)" in (tmp_path / "report" / "outcomes.md").read_text()


def test_with_reasons_the_report_shows_realized_churn_by_strongest_reason(tmp_path: Path, default_model: Path) -> None:
    log, cutoff = _period(tmp_path, seed=8)
    result = _run_and_report(tmp_path, default_model, log, cutoff, "--explain", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads((tmp_path / "report" / "outcomes.json").read_text())
    rows = figures["by_top_reason"]
    predictions = pq.read_table(tmp_path / "predictions.parquet")
    tops = predictions.column("reason_1").to_pylist()
    assert {row["reason"]: row["users"] for row in rows} == {reason: tops.count(reason) for reason in set(tops)}
    churners = round(figures["churn_rate"] * figures["users"])
    assert sum(row["churned"] for row in rows) == churners
    assert sum(row["share_of_churners"] for row in rows) == pytest.approx(1.0)
    flagged = predictions.column("churn").to_pylist()
    assert sum(row["flagged"] for row in rows) == sum(flagged)
    assert "Realized churn by each user's strongest reason" in (tmp_path / "report" / "outcomes.md").read_text()


def test_on_a_shifted_period_the_report_exits_1(tmp_path: Path, default_model: Path) -> None:
    """Half the users take a 3-9 week break and come back: the model calls them churners, the exit code says so."""
    log, cutoff = _period(tmp_path, seed=9, pause_share=0.5)
    result = _run_and_report(tmp_path, default_model, log, cutoff)
    assert result.returncode == 1, result.stderr[-2000:]
    figures = json.loads((tmp_path / "report" / "outcomes.json").read_text())
    assert figures["degraded"] is True
    assert figures["realized"]["roc_auc"] < figures["test"]["roc_auc"] - 0.05
    assert result.stdout.startswith("DEGRADED")
    assert "**Degraded:**" in (tmp_path / "report" / "outcomes.md").read_text()


def test_a_later_log_that_does_not_cover_the_window_is_refused_by_its_dates(
    tmp_path: Path, default_model: Path
) -> None:
    log, cutoff = _period(tmp_path, seed=8, days=60)
    predictions = tmp_path / "predictions.parquet"
    run = _score("run", "--events", str(log), "--model", str(default_model), "--cutoff", cutoff,
                 "--out", str(predictions))  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = _score("outcomes", "--predictions", str(predictions), "--events", str(log), "--label-days", "45",
                    "--out", str(tmp_path / "report"))  # fmt: skip
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "does not cover the label window" in error and cutoff[:10] in error and "(45 days)" in error
    assert not (tmp_path / "report").exists()


def test_another_populations_log_is_refused_rather_than_reported(tmp_path: Path, default_model: Path) -> None:
    """The newcomer's mistake: users of one simulated period labelled with another period's log (the same user ids,
    other lives) gave a realized ROC-AUC of 0.49 and no warning. Their histories disagree with what was scored."""
    log, cutoff = _period(tmp_path, seed=8)
    predictions = tmp_path / "predictions.parquet"
    run = _score("run", "--events", str(log), "--model", str(default_model), "--cutoff", cutoff,
                 "--session-col", "session_id", "--revenue-col", "revenue", "--out", str(predictions))  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    other = tmp_path / "other"
    other.mkdir()
    other_log, _ = _period(other, seed=12, days=95)  # reaches past the label window: only its people differ
    result = _score("outcomes", "--predictions", str(predictions), "--events", str(other_log),
                    "--out", str(tmp_path / "report"))  # fmt: skip
    assert result.returncode == 2, result.stdout
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "not these users' history" in error and "days_since_last_event" in error
    assert not (tmp_path / "report").exists()


def test_predictions_not_written_by_score_run_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"user_id": [1], "churn_probability": [0.5]}), other)
    result = _score("outcomes", "--predictions", str(other), "--events", str(other), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "has no run record" in result.stderr
    assert not (tmp_path / "r").exists()
