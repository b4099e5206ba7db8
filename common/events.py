"""Open an event log (CSV, Parquet or a glob of them) in DuckDB and check it before any feature is computed.

The log is never loaded into memory: DuckDB scans the files, so logs larger than memory work. The result is a
connection with a view ``events(user_id, event_time, session_id, revenue)`` in canonical names and types.
"""

from __future__ import annotations

import argparse
import glob
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

logger = logging.getLogger(__name__)

_NUMERIC_TYPES = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
)


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Names of the event log's columns; ``None`` means the log has no such column."""

    user: str = "user_id"
    time: str = "event_time"
    session: str | None = "session_id"
    revenue: str | None = "revenue"


def add_column_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that map a log's own column names onto the canonical ones (every command that reads a log)."""
    parser.add_argument("--user-col", default="user_id", help="event log column holding the user id")
    parser.add_argument("--time-col", default="event_time", help="event log column holding the event timestamp")
    parser.add_argument(
        "--session-col", default=None, help="column holding a session id; absent: sessionize by a 30-minute gap"
    )
    parser.add_argument("--revenue-col", default=None, help="column holding revenue per event; absent: revenue is 0")


def iso_timestamp(text: str) -> datetime:
    """An argparse type: an ISO date or timestamp (a cutoff)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date or timestamp: {text!r}") from exc


def columns_from_flags(args: argparse.Namespace) -> EventColumns:
    """The :class:`EventColumns` named by :func:`add_column_flags`' flags."""
    return EventColumns(args.user_col, args.time_col, args.session_col, args.revenue_col)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _scan_sql(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        return f"read_csv({_quote_literal(path)}, header = true)"
    if lower.endswith(".parquet") or lower.endswith(".pq"):
        return f"read_parquet({_quote_literal(path)})"
    raise ValueError(f"event log {path!r}: unknown format (expected .parquet, .csv, .csv.gz or .tsv)")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_event_log(path: str | Path, columns: EventColumns) -> duckdb.DuckDBPyConnection:
    """Return an in-process DuckDB connection with a checked ``events`` view over the log at ``path``.

    Raises
    ------
    ValueError
        Naming the file, column or value that is wrong: missing file, unknown format, missing column, non-numeric
        or negative revenue, unparseable or empty timestamps, empty user ids, or an empty log.
    """
    path = str(path)
    if not glob.has_magic(path) and not Path(path).is_file():
        raise ValueError(f"event log {path!r} does not exist")
    if glob.has_magic(path) and not glob.glob(path):
        raise ValueError(f"event log pattern {path!r} matches no file")
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute(f"CREATE VIEW raw_events AS SELECT * FROM {_scan_sql(path)}")
        schema = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE raw_events)").fetchall())
    except duckdb.Error as exc:
        raise ValueError(f"cannot read event log {path!r}: {_first_line(exc)}") from exc

    wanted = [c for c in (columns.user, columns.time, columns.session, columns.revenue) if c is not None]
    for name in wanted:
        if name not in schema:
            raise ValueError(f"event log is missing column {name!r} (it has: {', '.join(schema)})")

    try:
        (n_rows,) = con.execute("SELECT count(*) FROM raw_events").fetchone()  # type: ignore[misc]
    except duckdb.Error as exc:
        raise ValueError(f"cannot read event log {path!r}: {_first_line(exc)}") from exc
    if n_rows == 0:
        raise ValueError(f"event log {path!r} is empty")

    user, time = _quote_ident(columns.user), _quote_ident(columns.time)
    time_type = schema[columns.time].upper()
    if time_type.startswith("TIMESTAMP WITH TIME ZONE") or time_type == "TIMESTAMPTZ":
        time_sql = f"CAST({time} AS TIMESTAMP)"  # the session's time zone is UTC
    elif time_type.startswith(("TIMESTAMP", "DATE")):
        time_sql = f"CAST({time} AS TIMESTAMP)"
    else:
        time_sql = f"TRY_CAST({time} AS TIMESTAMP)"

    if columns.revenue is None:
        revenue_sql = "0.0"
    else:
        revenue_type = schema[columns.revenue].upper()
        if not revenue_type.startswith(_NUMERIC_TYPES):
            raise ValueError(f"column {columns.revenue!r} must be numeric revenue, found type {revenue_type}")
        revenue_sql = f"COALESCE(CAST({_quote_ident(columns.revenue)} AS DOUBLE), 0.0)"
    session_sql = "NULL" if columns.session is None else _quote_ident(columns.session)
    empty_sessions_sql = "0" if columns.session is None else f"count(*) FILTER (WHERE {session_sql} IS NULL)"

    try:
        bad_time, example_time, null_users, null_sessions, negative, example_negative = con.execute(
            f"""
            SELECT count(*) FILTER (WHERE {time_sql} IS NULL),
                   any_value(CAST({time} AS VARCHAR)) FILTER (WHERE {time_sql} IS NULL),
                   count(*) FILTER (WHERE {user} IS NULL),
                   {empty_sessions_sql},
                   count(*) FILTER (WHERE {revenue_sql} < 0),
                   min({revenue_sql})
            FROM raw_events
            """
        ).fetchone()  # type: ignore[misc]
    except duckdb.Error as exc:
        raise ValueError(f"cannot read event log {path!r}: {_first_line(exc)}") from exc
    refuse_bad_values(columns, bad_time, example_time, null_users, null_sessions, negative, example_negative)

    con.execute(
        f"""
        CREATE VIEW events AS
        SELECT {user} AS user_id, {time_sql} AS event_time, {session_sql} AS session_id, {revenue_sql} AS revenue
        FROM raw_events
        """
    )
    logger.info("event log %s rows=%d columns=%s", path, n_rows, ",".join(wanted))
    return con


def refuse_bad_values(
    columns: EventColumns,
    bad_times: int,
    example_time: object,
    empty_users: int,
    empty_sessions: int,
    negative_revenues: int,
    lowest_revenue: object,
) -> None:
    """Raise the one-line error for the first kind of bad value an engine counted in the log (all engines say the
    same words)."""
    if bad_times:
        raise ValueError(
            f"column {columns.time!r} has {bad_times} unparseable or empty timestamps, e.g. {example_time!r}"
        )
    if empty_users:
        raise ValueError(f"column {columns.user!r} has {empty_users} empty user ids")
    if empty_sessions:
        raise ValueError(
            f"column {columns.session!r} has {empty_sessions} empty session ids; leave out --session-col to split "
            "sessions at 30-minute gaps instead"
        )
    if negative_revenues:
        raise ValueError(f"column {columns.revenue!r} has {negative_revenues} negative values, e.g. {lowest_revenue}")


def timestamps_are_dates(con: duckdb.DuckDBPyConnection) -> bool:
    """True when no event has a time of day: 30-minute sessions then equal calendar days."""
    (dates_only,) = con.execute(  # type: ignore[misc]
        "SELECT bool_and(CAST(event_time AS TIME) = TIME '00:00:00') FROM events"
    ).fetchone()
    return bool(dates_only)
