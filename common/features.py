"""Every feature defined once: name, SQL, description, unit, minimum; feature sets are named lists of them.

A feature's SQL is an aggregate over one user's observed events (those at or before the cutoff), in DuckDB's
dialect; Spark runs the same query transpiled by sqlglot (``score.spark_engine``), and both must give the same
double bit for bit, so nothing here depends on the order rows are added in. It may use the columns
``event_time``, ``session_id`` (given, or derived from a 30-minute inactivity gap), ``revenue`` and ``age_days``
(days from the event to the cutoff, a float). Everything else (the training table, ``metrics.json``, the ONNX
metadata, the server's request schema and OpenAPI, the drift reference, the batch scorer) reads this catalogue
or the schema it writes into the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

logger = logging.getLogger(__name__)

SESSION_GAP_MINUTES = 30
RECENT_DAYS = 30


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    sql: str
    description: str
    unit: str
    minimum: float = 0.0

    def schema(self) -> dict[str, Any]:
        """What travels with the model: everything but nothing more than this definition."""
        return asdict(self)


_SESSIONS = "count(DISTINCT session_id)"
_DAYS = "count(DISTINCT CAST(event_time AS DATE))"
# Revenue is summed in whole millionths: a sum of integers does not depend on the order rows arrive in, and a
# distributed engine adds them in any order (a sum of doubles would differ in the last bits between engines).
_REVENUE = "CAST(sum(floor(revenue * 1e6 + 0.5)) AS DOUBLE) / 1e6"

CATALOGUE: tuple[Feature, ...] = (
    Feature("total_events", "CAST(count(*) AS DOUBLE)", "events in the observation window", "events"),
    Feature(
        "total_sessions",
        f"CAST({_SESSIONS} AS DOUBLE)",
        "distinct sessions (given, or split by a 30-minute inactivity gap)",
        "sessions",
    ),
    Feature(
        "avg_events_per_session",
        f"CAST(count(*) AS DOUBLE) / {_SESSIONS}",
        "total_events / total_sessions",
        "events per session",
    ),
    Feature(
        "revenue_per_session",
        f"{_REVENUE} / {_SESSIONS}",
        "total revenue / total_sessions",
        "revenue per session",
    ),
    Feature("active_days", f"CAST({_DAYS} AS DOUBLE)", "distinct calendar days (UTC) with at least one event", "days"),
    Feature("days_since_last_event", "min(age_days)", "days from the user's last event to the cutoff", "days"),
    Feature(
        "days_since_first_event", "max(age_days)", "days from the user's first event to the cutoff (tenure)", "days"
    ),
    Feature(
        "active_days_last_30d",
        f"CAST(count(DISTINCT CASE WHEN age_days < {RECENT_DAYS} THEN CAST(event_time AS DATE) END) AS DOUBLE)",
        f"distinct calendar days with an event in the {RECENT_DAYS} days before the cutoff",
        "days",
    ),
    Feature(
        "mean_days_between_active_days",
        f"(max(age_days) - min(age_days)) / greatest({_DAYS} - 1, 1)",
        "span from first to last event divided by the gaps between active days: the user's usual rhythm",
        "days",
    ),
    Feature(
        "days_since_last_purchase",
        "coalesce(min(CASE WHEN revenue > 0 THEN age_days END), max(age_days))",
        "days from the last event with revenue to the cutoff (the tenure when there was none)",
        "days",
    ),
)

BY_NAME = {feature.name: feature for feature in CATALOGUE}
SEED = ("total_events", "total_sessions", "avg_events_per_session", "revenue_per_session", "active_days")
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    # The first version's five features: a model trained on them takes the seed's /predict body byte for byte.
    "seed": SEED,
    # The seed plus recency: the one catalogue feature whose addition raises cross-validated ROC-AUC by >= 0.002
    # both on the simulator and on the CDNOW purchase log (`python -m benchmarks ablation`; the README's table).
    # Tenure helps on the simulator only (+0.003; -0.001 on CDNOW, a single-cohort log), the others on neither.
    "behaviour": (*SEED, "days_since_last_event"),
}
DEFAULT_FEATURE_SET = "behaviour"


def feature_set(name: str) -> tuple[Feature, ...]:
    """The features of the set called ``name``, in the model's input order."""
    if name not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {name!r}; choose one of {', '.join(FEATURE_SETS)}")
    return tuple(BY_NAME[f] for f in FEATURE_SETS[name])


# Observation window: every event at or before the cutoff, with its age in days at the cutoff. Ages are computed
# from whole microseconds so that every engine that runs this SQL (DuckDB; Spark through sqlglot) gets the same
# double, bit for bit.
_OBSERVED = """
SELECT user_id, event_time, session_id, revenue,
       date_diff('microsecond', event_time, {cutoff}) / 86400e6 AS age_days
FROM events WHERE event_time <= {cutoff}
"""

# Without session ids, a new session starts at a user's first event and after every gap longer than 30 minutes.
_GAP_US = SESSION_GAP_MINUTES * 60_000_000
_SESSIONIZED = f"""
SELECT user_id, event_time, revenue, age_days,
       SUM(CASE WHEN previous IS NULL OR date_diff('microsecond', previous, event_time) > {_GAP_US} THEN 1 ELSE 0 END)
           OVER (PARTITION BY user_id ORDER BY event_time ROWS UNBOUNDED PRECEDING) AS session_id
FROM (SELECT *, LAG(event_time) OVER (PARTITION BY user_id ORDER BY event_time) AS previous FROM observed)
"""


def utc_naive(moment: datetime) -> datetime:
    """``moment`` in UTC without a time zone: how event times are read (a cutoff with an offset is converted)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def timestamp_literal(moment: datetime) -> str:
    """``moment`` as a SQL timestamp literal in UTC."""
    return f"TIMESTAMP '{utc_naive(moment).isoformat(sep=' ', timespec='microseconds')}'"


def features_query(features: Sequence[Feature], cutoff: datetime, sessionize: bool, ordered: bool = True) -> str:
    """The one SELECT of every feature per user over the ``events`` view, in DuckDB's SQL.

    Spark runs the same text, transpiled by sqlglot (``score.spark``); nothing else writes feature SQL.

    Parameters
    ----------
    features : which features, in which column order.
    cutoff : end of the observation window (inclusive).
    sessionize : derive sessions from a 30-minute inactivity gap instead of the log's ``session_id``.
    ordered : sort by ``user_id`` (a distributed engine skips it).
    """
    observed = _OBSERVED.format(cutoff=timestamp_literal(cutoff))
    ctes = f"WITH observed AS ({observed})"
    if sessionize:
        ctes += f", sessions AS ({_SESSIONIZED})"
    columns = ",\n       ".join(f"{f.sql} AS {f.name}" for f in features)
    source = "sessions" if sessionize else "observed"
    order = "\nORDER BY user_id" if ordered else ""
    return f"{ctes}\nSELECT user_id,\n       {columns}\nFROM {source}\nGROUP BY user_id{order}"


def build_features(
    con: duckdb.DuckDBPyConnection, cutoff: datetime, sessionize: bool, features: Sequence[Feature]
) -> pd.DataFrame:
    """Per-user ``features`` over the events at or before ``cutoff``.

    Parameters
    ----------
    con : connection holding the ``events`` view (see :func:`common.events.open_event_log`).
    cutoff : end of the observation window (inclusive).
    sessionize : derive sessions from a 30-minute inactivity gap instead of the log's ``session_id``.
    features : which features, in which column order.

    Returns
    -------
    DataFrame with ``user_id`` and one float column per feature, one row per user active before the cutoff.
    """
    frame = con.execute(features_query(features, cutoff, sessionize)).df()
    logger.info("features users=%d cutoff=%s sessionized=%s", len(frame), cutoff.isoformat(), sessionize)
    if frame.empty:
        raise ValueError(f"no user has an event at or before the cutoff {cutoff.isoformat()}")
    return frame
