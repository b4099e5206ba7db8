"""Spark (local[2]) builds the same features and scores as DuckDB: the feature SQL is one definition, transpiled.

Features are compared exactly, probabilities to 1e-6 (onnxruntime sums trees in float32, with one thread per Spark
worker and several in-process), on the simulated log and on a log of edge cases.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.classification import ScoreGroups
from common.events import EventColumns
from common.features import feature_set
from score.duckdb_engine import score_on_duckdb
from score.model import ScoreError
from score.output import ESTIMATE_FILE, RUN_RECORD_FILE
from score.spark_engine import open_events, score_on_spark, spark_session
from tests.unit.test_events import BAD_LOGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FEATURES = [f.name for f in feature_set("behaviour")]
EDGE_CUTOFF = "2026-01-10 00:00:00"
# user, time: sessions split after a gap of more than 30 minutes, so exactly 30 minutes stays in the session.
EDGE_EVENTS = [
    ("one_event", "2026-01-05 08:00:00"),
    ("gap_30m", "2026-01-05 10:00:00"),
    ("gap_30m", "2026-01-05 10:30:00"),  # exactly 30 minutes: same session
    ("gap_30m", "2026-01-05 11:00:00.000001"),  # 30 minutes and 1 microsecond: a new session
    ("midnight", "2026-01-06 23:50:00"),
    ("midnight", "2026-01-07 00:10:00"),  # same session, another calendar day
    ("same_instant", "2026-01-08 12:00:00"),
    ("same_instant", "2026-01-08 12:00:00"),
    ("at_cutoff", "2026-01-02 09:00:00"),
    ("at_cutoff", EDGE_CUTOFF),  # at the cutoff: observed
    ("at_cutoff", "2026-01-10 00:00:00.000001"),  # after it: not
    ("only_after", "2026-01-11 09:00:00"),  # never active before the cutoff: not scored
]
EDGE_EXPECTED = {  # user: (total_events, total_sessions, active_days, days_since_last_event)
    "one_event": (1, 1, 1, 4 + 16 / 24),
    "gap_30m": (3, 2, 1, 4 + 13 / 24 - 1e-6 / 86400),
    "midnight": (2, 1, 2, 2 + (23 * 60 + 50) / 1440),
    "same_instant": (2, 1, 1, 1.5),
    "at_cutoff": (2, 2, 2, 0.0),
}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = spark_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def edge_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV log with string user ids, no session column and no revenue column."""
    path = tmp_path_factory.mktemp("edge") / "events.csv"
    path.write_text("user,ts\n" + "".join(f"{user},{time}\n" for user, time in EDGE_EVENTS))
    return path


def _read_sorted(path: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    order = np.argsort(np.asarray(table.column("user_id").to_pylist(), dtype=object).astype(str), kind="stable")
    return {name: np.asarray(table.column(name).to_pylist(), dtype=object)[order] for name in table.column_names}


def _assert_same_predictions(duck: Path, spark_out: Path) -> dict[str, np.ndarray]:
    a, b = _read_sorted(duck), _read_sorted(spark_out)
    assert list(a) == list(b)  # same columns, same order
    assert list(a["user_id"]) == list(b["user_id"])  # same users
    for name in FEATURES:
        assert np.array_equal(a[name].astype(float), b[name].astype(float)), name  # exactly
    difference = np.abs(a["churn_probability"].astype(float) - b["churn_probability"].astype(float))
    assert difference.max() <= 1e-6
    for name in ("threshold", "model_version", "cutoff"):
        assert list(a[name]) == list(b[name])
    return a


@pytest.mark.parametrize("sessions", ["given", "30-minute gaps"])
def test_the_simulated_log_gives_the_same_features_and_scores_on_both_engines(
    spark: Any, tmp_path: Path, event_log: Path, behaviour_model: Path, sessions: str
) -> None:
    columns = EventColumns(session="session_id" if sessions == "given" else None, revenue="revenue")
    duck = score_on_duckdb(event_log, columns, behaviour_model, tmp_path / "duck.parquet")
    distributed = score_on_spark(str(event_log), columns, behaviour_model, str(tmp_path / "spark"), spark=spark)
    assert duck.users == distributed.users > 1000
    _assert_same_predictions(tmp_path / "duck.parquet", tmp_path / "spark")
    assert len(list((tmp_path / "spark").glob("part-*.parquet"))) >= 1


def test_edge_cases_give_the_same_features_on_both_engines_and_the_expected_ones(
    spark: Any, tmp_path: Path, edge_log: Path, behaviour_model: Path
) -> None:
    from datetime import datetime

    columns = EventColumns(user="user", time="ts", session=None, revenue=None)
    cutoff = datetime.fromisoformat(EDGE_CUTOFF)
    score_on_duckdb(edge_log, columns, behaviour_model, tmp_path / "duck.parquet", cutoff)
    score_on_spark(str(edge_log), columns, behaviour_model, str(tmp_path / "spark"), cutoff, spark=spark)
    rows = _assert_same_predictions(tmp_path / "duck.parquet", tmp_path / "spark")
    by_user = {
        user: tuple(
            rows[name][i] for name in ("total_events", "total_sessions", "active_days", "days_since_last_event")
        )
        for i, user in enumerate(rows["user_id"])
    }
    assert set(by_user) == set(EDGE_EXPECTED)
    for user, (events, sessions, days, recency) in EDGE_EXPECTED.items():
        assert by_user[user][:3] == (events, sessions, days), user
        assert by_user[user][3] == pytest.approx(recency, abs=1e-9), user
    assert set(rows["revenue_per_session"]) == {0.0}


def test_bad_input_on_spark_is_one_error_and_writes_nothing(
    spark: Any, tmp_path: Path, event_log: Path, behaviour_model: Path
) -> None:
    out = tmp_path / "spark"
    with pytest.raises(ScoreError, match="event log is missing column 'amount'"):
        score_on_spark(str(event_log), EventColumns(revenue="amount"), behaviour_model, str(out), spark=spark)
    assert list(tmp_path.iterdir()) == []
    # A folder that is not an earlier run's output is never replaced (it would be, whole).
    (tmp_path / "keep.txt").write_text("artifacts")
    with pytest.raises(ScoreError, match="is not an earlier score run's folder"):
        score_on_spark(str(event_log), EventColumns(), behaviour_model, str(tmp_path), spark=spark)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(("text", "columns", "message"), BAD_LOGS)
def test_spark_refuses_the_bad_logs_duckdb_refuses_with_the_same_words(
    spark: Any, tmp_path: Path, text: str, columns: EventColumns, message: str
) -> None:
    (tmp_path / "events.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        open_events(spark, str(tmp_path / "events.csv"), columns)


def test_the_command_line_scores_on_spark_and_the_outcome_report_reads_its_folder(
    tmp_path: Path, event_log: Path, behaviour_model: Path
) -> None:
    """``--engine spark --master local[2]`` in its own process (its own JVM), then ``outcomes`` on the folder."""
    out = tmp_path / "predictions"
    run = subprocess.run(
        [sys.executable, "-m", "score", "run", "--engine", "spark", "--master", "local[2]", "--events",
         str(event_log), "--model", str(behaviour_model), "--cutoff", "2026-02-20", "--session-col", "session_id",
         "--revenue-col", "revenue", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on spark" in run.stdout
    record = json.loads((out / RUN_RECORD_FILE).read_text())
    assert record["engine"] == "spark" and record["features"] == FEATURES
    assert [p.name for p in tmp_path.iterdir()] == ["predictions"]  # no staging folder left behind
    # The estimate before labels, counted on the cluster, is the one counted from the written scores.
    groups = ScoreGroups(record["threshold"])
    groups.add(pq.read_table(out).column("churn_probability").to_numpy())
    estimated = json.loads((out / ESTIMATE_FILE).read_text())["estimated"]
    assert estimated == pytest.approx(groups.estimate(), abs=1e-12)
    assert f"estimated ROC-AUC {estimated['roc_auc']:.3f} before labels" in run.stdout

    report = subprocess.run(
        [sys.executable, "-m", "score", "outcomes", "--predictions", str(out), "--events", str(event_log),
         "--label-days", "14", "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert report.returncode in (0, 1), report.stderr[-2000:]
    figures = json.loads((tmp_path / "report" / "outcomes.json").read_text())
    assert figures["users"] == pq.read_table(out).num_rows and figures["label_days"] == 14


def test_reasons_in_a_nightly_run_are_the_same_on_both_engines(
    spark: Any, tmp_path: Path, event_log: Path, behaviour_model: Path
) -> None:
    """`score run --explain 2` on each engine: the same two strongest reasons per user, through the model's graph."""
    columns = EventColumns(session="session_id", revenue="revenue")
    score_on_duckdb(event_log, columns, behaviour_model, tmp_path / "duck.parquet", explain=2)
    score_on_spark(str(event_log), columns, behaviour_model, str(tmp_path / "spark"), spark=spark, explain=2)
    a, b = _assert_same_predictions(tmp_path / "duck.parquet", tmp_path / "spark"), _read_sorted(tmp_path / "spark")
    for i in (1, 2):
        assert list(a[f"reason_{i}"]) == list(b[f"reason_{i}"])
        assert (
            np.abs(a[f"reason_{i}_contribution"].astype(float) - b[f"reason_{i}_contribution"].astype(float)).max()
            <= 1e-6
        )
