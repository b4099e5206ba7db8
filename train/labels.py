"""The churn label: no event in the label window that follows the cutoff."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd


def default_cutoff(con: duckdb.DuckDBPyConnection, label_days: int) -> datetime:
    """The last event time minus ``label_days``: the latest cutoff whose label window the log covers."""
    (last,) = con.execute("SELECT max(event_time) FROM events").fetchone()  # type: ignore[misc]
    return last - timedelta(days=label_days)


def check_label_window(con: duckdb.DuckDBPyConnection, cutoff: datetime, label_days: int) -> None:
    """Refuse a label window that runs past the log's end: users would look churned for lack of data."""
    first, last = con.execute("SELECT min(event_time), max(event_time) FROM events").fetchone()  # type: ignore[misc]
    if cutoff < first:
        raise ValueError(f"cutoff {cutoff.isoformat()} is before the first event ({first.isoformat()})")
    if cutoff + timedelta(days=label_days) > last:
        raise ValueError(
            f"label window {cutoff.isoformat()} + {label_days} days ends after the last event ({last.isoformat()}); "
            "choose an earlier --cutoff or fewer --label-days"
        )


def make_labels(con: duckdb.DuckDBPyConnection, user_ids: pd.Series, cutoff: datetime, label_days: int) -> pd.Series:
    """``True`` for each user with no event in ``(cutoff, cutoff + label_days]``, in the order of ``user_ids``."""
    returning = con.execute(
        "SELECT DISTINCT user_id FROM events WHERE event_time > $cutoff AND event_time <= $end",
        {"cutoff": cutoff, "end": cutoff + timedelta(days=label_days)},
    ).df()["user_id"]
    churned = ~user_ids.isin(returning)
    churned.name = "churned"
    if churned.nunique() < 2:
        only = bool(churned.iloc[0])
        raise ValueError(
            f"every one of the {len(churned)} users is labeled churned={only} (a single class); "
            "choose another --cutoff or --label-days"
        )
    return churned.reset_index(drop=True)
