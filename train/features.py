"""The one SQL definition of the per-user features, run by DuckDB over the ``events`` view."""

from __future__ import annotations

import logging
from datetime import datetime

import duckdb
import pandas as pd

logger = logging.getLogger(__name__)

# The ONNX input's column order. The server reads it back from the model's metadata, never from here.
FEATURES = ("total_events", "total_sessions", "avg_events_per_session", "revenue_per_session", "active_days")

FEATURE_DESCRIPTIONS = {
    "total_events": "events in the observation window",
    "total_sessions": "distinct sessions (given, or split by a 30-minute inactivity gap)",
    "avg_events_per_session": "total_events / total_sessions",
    "revenue_per_session": "total revenue / total_sessions",
    "active_days": "distinct calendar days (UTC) with at least one event",
}

SESSION_GAP_MINUTES = 30

# Observation window: every event at or before the cutoff.
_OBSERVED = "SELECT user_id, event_time, session_id, revenue FROM events WHERE event_time <= $cutoff"

# Without session ids, a new session starts at a user's first event and after every gap longer than 30 minutes.
_SESSIONIZED = f"""
SELECT user_id, event_time, revenue,
       SUM(CASE WHEN previous IS NULL OR event_time - previous > INTERVAL {SESSION_GAP_MINUTES} MINUTE
                THEN 1 ELSE 0 END)
           OVER (PARTITION BY user_id ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS session_id
FROM (SELECT *, LAG(event_time) OVER (PARTITION BY user_id ORDER BY event_time) AS previous FROM observed)
"""

_FEATURES_SQL = """
SELECT user_id,
       CAST(count(*) AS DOUBLE) AS total_events,
       CAST(count(DISTINCT session_id) AS DOUBLE) AS total_sessions,
       total_events / total_sessions AS avg_events_per_session,
       sum(revenue) / total_sessions AS revenue_per_session,
       CAST(count(DISTINCT CAST(event_time AS DATE)) AS DOUBLE) AS active_days
FROM {source}
GROUP BY user_id
ORDER BY user_id
"""


def build_features(con: duckdb.DuckDBPyConnection, cutoff: datetime, sessionize: bool) -> pd.DataFrame:
    """Per-user features over the events at or before ``cutoff``.

    Parameters
    ----------
    con : connection holding the ``events`` view (see :func:`train.events.open_event_log`).
    cutoff : end of the observation window (inclusive).
    sessionize : derive sessions from a 30-minute inactivity gap instead of the log's ``session_id``.

    Returns
    -------
    DataFrame with ``user_id`` and the columns of :data:`FEATURES`, one row per user active before the cutoff.
    """
    if sessionize:
        sql = f"WITH observed AS ({_OBSERVED}), sessions AS ({_SESSIONIZED}) " + _FEATURES_SQL.format(source="sessions")
    else:
        sql = f"WITH observed AS ({_OBSERVED}) " + _FEATURES_SQL.format(source="observed")
    frame = con.execute(sql, {"cutoff": cutoff}).df()
    logger.info("features users=%d cutoff=%s sessionized=%s", len(frame), cutoff.isoformat(), sessionize)
    if frame.empty:
        raise ValueError(f"no user has an event at or before the cutoff {cutoff.isoformat()}")
    return frame
