"""The feature SQL and the labels on a hand-computed tiny log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from common.events import EventColumns, open_event_log
from common.features import BY_NAME, CATALOGUE, FEATURE_SETS, SEED, build_features, feature_set
from train.labels import check_label_window, default_cutoff, make_labels

CUTOFF = datetime(2026, 1, 5)
LABEL_DAYS = 10


def _log(tmp_path: Path, rows: list[tuple[str, str, str | None, float]]) -> Path:
    path = tmp_path / "events.csv"
    pd.DataFrame(rows, columns=["user_id", "event_time", "session_id", "revenue"]).to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_log(tmp_path: Path) -> Path:
    return _log(
        tmp_path,
        [
            # user a: gaps of 20 and exactly 30 minutes stay in one session; 31 minutes opens a new one.
            ("a", "2026-01-01 10:00:00", "s1", 0.0),
            ("a", "2026-01-01 10:20:00", "s1", 5.0),
            ("a", "2026-01-01 10:50:00", "s1", 0.0),
            ("a", "2026-01-01 11:21:00", "s2", 0.0),
            ("a", "2026-01-02 09:00:00", "s2", 7.0),  # the log reuses s2 on another day
            ("a", "2026-01-10 12:00:00", "s9", 0.0),  # in the label window: a returns
            # user b: an event exactly at the cutoff counts as observed; one exactly at the window's end as a return.
            ("b", "2026-01-03 23:59:59", "s3", 0.0),
            ("b", "2026-01-05 00:00:00", "s4", 1.0),
            ("b", "2026-01-15 00:00:00", "s5", 0.0),
            # user c: one day of activity, nothing after the cutoff: churned. One event just after the window.
            ("c", "2026-01-04 08:00:00", "s6", 0.0),
            ("c", "2026-01-15 00:00:01", "s7", 0.0),
            # user d: only active after the cutoff, so not scored.
            ("d", "2026-01-05 00:00:01", "s8", 0.0),
        ],
    )


def _features(log: Path, sessionize: bool) -> pd.DataFrame:
    con = open_event_log(log, EventColumns(session=None if sessionize else "session_id", revenue="revenue"))
    return build_features(con, CUTOFF, sessionize, CATALOGUE).set_index("user_id")


HOUR = 1 / 24
SECOND = 1 / 86_400


def test_sessionized_features_match_hand_computation(tiny_log: Path) -> None:
    features = _features(tiny_log, sessionize=True)
    assert list(features.columns) == [f.name for f in CATALOGUE]
    assert list(features.index) == ["a", "b", "c"]
    seed = features[list(SEED)]
    assert seed.loc["a"].tolist() == [5.0, 3.0, 5 / 3, 12.0 / 3, 2.0]
    assert seed.loc["b"].tolist() == [2.0, 2.0, 1.0, 0.5, 2.0]
    assert seed.loc["c"].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]


# By hand, from the cutoff 2026-01-05 00:00: a's events end 2026-01-02 09:00 (2 d 15 h before) and start
# 2026-01-01 10:00 (3 d 14 h); its last purchase is that last event. b has an event exactly at the cutoff, a
# purchase; its first is 1 d 1 s before. c has one event 16 h before and no purchase (the tenure stands in).
RECENCY_EXPECTED = {
    "days_since_last_event": {"a": 2 + 15 * HOUR, "b": 0.0, "c": 16 * HOUR},
    "days_since_first_event": {"a": 3 + 14 * HOUR, "b": 1 + SECOND, "c": 16 * HOUR},
    "active_days_last_30d": {"a": 2.0, "b": 2.0, "c": 1.0},
    "mean_days_between_active_days": {"a": 23 * HOUR, "b": 1 + SECOND, "c": 0.0},
    "days_since_last_purchase": {"a": 2 + 15 * HOUR, "b": 0.0, "c": 16 * HOUR},
}


@pytest.mark.parametrize("name", sorted(RECENCY_EXPECTED))
def test_recency_features_match_hand_computation(tiny_log: Path, name: str) -> None:
    features = _features(tiny_log, sessionize=True)
    assert features[name].to_dict() == pytest.approx(RECENCY_EXPECTED[name], abs=1e-9)


def test_every_catalogue_feature_is_described_with_a_unit_and_a_minimum() -> None:
    for feature in CATALOGUE:
        assert feature.description and feature.unit and feature.minimum == 0.0, feature.name
        assert feature.schema() == {
            "name": feature.name,
            "sql": feature.sql,
            "description": feature.description,
            "unit": feature.unit,
            "minimum": feature.minimum,
        }


def test_feature_sets_name_catalogue_features_and_seed_keeps_the_first_versions_order() -> None:
    assert FEATURE_SETS["seed"] == (
        "total_events",
        "total_sessions",
        "avg_events_per_session",
        "revenue_per_session",
        "active_days",
    )
    for name, names in FEATURE_SETS.items():
        assert [f.name for f in feature_set(name)] == list(names)
        assert all(n in BY_NAME for n in names)
    assert FEATURE_SETS["behaviour"][:5] == FEATURE_SETS["seed"]
    with pytest.raises(ValueError, match="unknown feature set 'nope'; choose one of seed, behaviour"):
        feature_set("nope")


def test_date_only_timestamps_are_detected(tmp_path: Path) -> None:
    from common.events import timestamps_are_dates

    dated = _log(tmp_path, [("a", "2026-01-01", None, 1.0), ("a", "2026-01-03", None, 2.0)])
    assert timestamps_are_dates(open_event_log(dated, EventColumns(session=None, revenue="revenue")))
    timed = tmp_path / "timed"
    timed.mkdir()
    assert not timestamps_are_dates(
        open_event_log(
            _log(timed, [("a", "2026-01-01 00:00:01", None, 1.0)]), EventColumns(session=None, revenue="revenue")
        )
    )


def test_given_session_ids_are_used_as_is(tiny_log: Path) -> None:
    features = _features(tiny_log, sessionize=False)
    assert features.loc["a", "total_sessions"] == 2.0  # s1 and s2, whatever the gaps
    assert features.loc["a", "avg_events_per_session"] == 2.5


def test_absent_revenue_column_means_zero_revenue(tiny_log: Path) -> None:
    con = open_event_log(tiny_log, EventColumns(session=None, revenue=None))
    features = build_features(con, CUTOFF, True, CATALOGUE)
    assert (features["revenue_per_session"] == 0.0).all()


def test_labels_at_the_window_edges(tiny_log: Path) -> None:
    con = open_event_log(tiny_log, EventColumns(session=None, revenue="revenue"))
    users = build_features(con, CUTOFF, True, CATALOGUE)["user_id"]
    labels = make_labels(con, users, CUTOFF, LABEL_DAYS)
    assert dict(zip(users, labels, strict=True)) == {"a": False, "b": False, "c": True}


def test_default_cutoff_is_last_event_minus_label_days(tiny_log: Path) -> None:
    con = open_event_log(tiny_log, EventColumns(session=None, revenue="revenue"))
    assert default_cutoff(con, LABEL_DAYS) == datetime(2026, 1, 5, 0, 0, 1)


def test_label_window_past_the_log_end_is_refused(tiny_log: Path) -> None:
    con = open_event_log(tiny_log, EventColumns(session=None, revenue="revenue"))
    with pytest.raises(ValueError, match="ends after the last event"):
        check_label_window(con, datetime(2026, 1, 6), LABEL_DAYS)


def test_no_user_before_the_cutoff_is_an_error(tiny_log: Path) -> None:
    con = open_event_log(tiny_log, EventColumns(session=None, revenue="revenue"))
    with pytest.raises(ValueError, match="no user has an event at or before the cutoff"):
        build_features(con, datetime(2025, 12, 1), True, CATALOGUE)


def test_a_single_class_is_an_error(tmp_path: Path) -> None:
    log = _log(
        tmp_path,
        [
            ("a", "2026-01-01 10:00:00", "s1", 0.0),
            ("b", "2026-01-02 10:00:00", "s2", 0.0),
            ("a", "2026-01-20 10:00:00", "s3", 0.0),
            ("b", "2026-01-20 10:00:00", "s4", 0.0),
        ],
    )
    con = open_event_log(log, EventColumns())
    users = build_features(con, CUTOFF, False, CATALOGUE)["user_id"]
    with pytest.raises(ValueError, match="single class"):
        make_labels(con, users, CUTOFF, LABEL_DAYS)


def test_glob_of_files_reads_them_all(tmp_path: Path, tiny_log: Path) -> None:
    frame = pd.read_csv(tiny_log)
    frame.iloc[:5].to_parquet(tmp_path / "part-1.parquet")
    frame.iloc[5:].to_parquet(tmp_path / "part-2.parquet")
    con = open_event_log(tmp_path / "part-*.parquet", EventColumns(session=None, revenue="revenue"))
    glob_features = build_features(con, CUTOFF, True, CATALOGUE).set_index("user_id")
    pd.testing.assert_frame_equal(glob_features, _features(tiny_log, sessionize=True))
