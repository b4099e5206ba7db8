"""Drift is found where behaviour moved, not where it did not; bad input is exit code 2 with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from common.events import EventColumns
from train.__main__ import main
from train.pipeline import write_features
from train.simulate import SimulationConfig, simulate_events


def _features(tmp_path: Path, trained: Path, name: str, **changes: float) -> Path:
    events = tmp_path / f"{name}.parquet"
    simulate_events(SimulationConfig(users=1500, days=75, seed=12, **changes), events)  # type: ignore[arg-type]
    cutoff = pd.Timestamp(json.loads((trained / "metrics.json").read_text())["cutoff"]).to_pydatetime()
    out = tmp_path / f"{name}-features.parquet"
    write_features(events, out, EventColumns(session="session_id", revenue="revenue"), cutoff, "seed")
    return out


def test_fewer_sessions_per_user_is_drift_in_sessions(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = _features(tmp_path, trained, "fewer", sessions_scale=0.3)
    out = tmp_path / "report"
    assert main(["drift", "--reference", str(trained), "--current", str(current), "--out", str(out)]) == 1
    summary = json.loads((out / "data_drift_report.json").read_text())["summary"]
    assert "total_sessions" in summary["drifted_features"]
    assert (out / "drift_total_sessions.png").stat().st_size > 1000
    assert (out / "data_drift_report.html").stat().st_size > 10_000
    assert capsys.readouterr().out.startswith("DRIFT: ")


def test_a_fresh_log_of_the_same_behaviour_is_no_drift(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = _features(tmp_path, trained, "fresh")
    out = tmp_path / "report"
    assert main(["drift", "--reference", str(trained), "--current", str(current), "--out", str(out)]) == 0
    summary = json.loads((out / "data_drift_report.json").read_text())["summary"]
    assert summary["drifted_features"] == [] and not summary["dataset_drift"]
    assert not list(out.glob("drift_*.png"))
    assert capsys.readouterr().out.startswith("no drift: 0 of 5")


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.jsonl", "does not exist"),
        ("", "empty.jsonl", "is empty"),
        ('{"a": 1}\n' * 40, "wrong.jsonl", "lacks the model's feature columns"),
        (
            "total_events,total_sessions,avg_events_per_session,revenue_per_session,active_days\n1,1,1,0,1\n",
            "few.csv",
            "needs at least 30",
        ),
        ("x", "data.txt", "unknown format"),
    ],
)
def test_bad_current_data_is_exit_2_and_writes_nothing(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, name: str, message: str
) -> None:
    current = tmp_path / name
    if content is not None:
        current.write_text(content)
    out = tmp_path / "report"
    assert main(["drift", "--reference", str(trained), "--current", str(current), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not out.exists()
