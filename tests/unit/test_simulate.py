"""The simulator is deterministic for a seed and its churn comes from behaviour."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from train.simulate import EVENT_TYPES, SimulationConfig, simulate_events


def test_same_seed_gives_the_same_log_and_another_seed_does_not(tmp_path: Path) -> None:
    config = SimulationConfig(users=300, days=30, seed=3)
    simulate_events(config, tmp_path / "a.parquet")
    simulate_events(config, tmp_path / "b.parquet")
    simulate_events(SimulationConfig(users=300, days=30, seed=4), tmp_path / "c.parquet")
    a, b, c = (pd.read_parquet(tmp_path / f"{n}.parquet") for n in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_log_has_the_documented_columns_and_values(tmp_path: Path) -> None:
    n = simulate_events(SimulationConfig(users=200, days=20, seed=1), tmp_path / "e.csv")
    log = pd.read_csv(tmp_path / "e.csv", parse_dates=["event_time"])
    assert list(log.columns) == ["user_id", "event_time", "session_id", "event_type", "revenue"]
    assert len(log) == n > 0
    assert set(log["event_type"]) <= set(EVENT_TYPES)
    assert (log["revenue"] >= 0).all()
    assert (log.loc[log["event_type"] != "purchase", "revenue"] == 0).all()
    assert log["event_time"].between("2026-01-01", "2026-01-22").all()


def test_fewer_sessions_scale_gives_fewer_sessions_per_user(tmp_path: Path) -> None:
    simulate_events(SimulationConfig(users=500, days=30, seed=2), tmp_path / "base.parquet")
    simulate_events(SimulationConfig(users=500, days=30, seed=2, sessions_scale=0.2), tmp_path / "less.parquet")
    base, less = (pd.read_parquet(tmp_path / f"{n}.parquet") for n in ("base", "less"))

    def per_active_day(log: pd.DataFrame) -> float:
        days = log.groupby("user_id")["event_time"].apply(lambda t: t.dt.date.nunique()).sum()
        return log["session_id"].nunique() / days

    assert per_active_day(less) < 0.8 * per_active_day(base)
