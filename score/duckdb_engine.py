"""Score every user of an event log in-process: DuckDB builds the features, onnxruntime scores them in chunks.

The log is scanned, never loaded (DuckDB spills to disk past memory); the feature table (one row per user) is
materialized once, then streamed in chunks of ``chunk_rows`` through the model into a Parquet file that appears,
atomically, only when every row is written.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from common.classification import ScoreGroups
from common.events import EventColumns, open_event_log
from common.features import features_query
from common.io import atomic_path
from score.model import ScoreError, ScoringSpec, check_cutoff, load_for_scoring
from score.output import RUN_RECORD_KEY, scored_batch, write_estimate
from score.summary import RunSummary

logger = logging.getLogger(__name__)

CHUNK_ROWS = 65_536


def build_feature_table(con: duckdb.DuckDBPyConnection, spec: ScoringSpec, cutoff: datetime, sessionize: bool) -> int:
    """Materialize ``scored_users`` (user_id + the model's features); returns the number of users."""
    try:
        con.execute(f"CREATE TEMP TABLE scored_users AS {features_query(spec.features, cutoff, sessionize)}")
    except duckdb.Error as exc:
        raise ScoreError(f"cannot build the model's features on DuckDB: {str(exc).splitlines()[0]}") from None
    ((users,),) = con.execute("SELECT count(*) FROM scored_users").fetchall()
    return int(users)


def score_on_duckdb(
    events: Path,
    columns: EventColumns,
    model_path: Path,
    out: Path,
    cutoff: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
    explain: int = 0,
) -> RunSummary:
    """Write ``out`` (Parquet): every user active at or before ``cutoff``, their features and their score (and
    their ``explain`` strongest reasons)."""
    summary = RunSummary("duckdb", str(out))
    with summary.timed("load"):
        model, spec, _ = load_for_scoring(model_path, explain)
        con = open_event_log(events, columns)
        ((first, last),) = con.execute("SELECT min(event_time), max(event_time) FROM events").fetchall()
        cutoff = check_cutoff(cutoff, first, last)
    with summary.timed("features"):
        total = build_feature_table(con, spec, cutoff, sessionize=columns.session is None)
    if total == 0:
        raise ScoreError(f"no user has an event at or before the cutoff {cutoff.isoformat()}")
    logger.info("features of %d users at cutoff %s; scoring with %s", total, cutoff.isoformat(), spec.version)
    record = spec.record(cutoff, "duckdb")
    reader = con.sql("SELECT * FROM scored_users").to_arrow_reader(chunk_rows)
    groups = ScoreGroups(spec.threshold)
    with atomic_path(out) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            while True:
                with summary.timed("read"):
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                with summary.timed("score"):
                    scored = scored_batch(model, batch, spec, cutoff, explain)
                with summary.timed("write"):
                    if writer is None:
                        schema = scored.schema.with_metadata({RUN_RECORD_KEY: json.dumps(record)})
                        writer = pq.ParquetWriter(tmp, schema)
                    writer.write_batch(scored)
                groups.add(scored.column("churn_probability").to_numpy())
                summary.users += scored.num_rows
                summary.churners += int(scored.column("churn").true_count)
                logger.info("scored %d/%d users (%.0f%%)", summary.users, total, 100 * summary.users / total)
        finally:
            if writer is not None:
                writer.close()
    con.close()
    summary.estimate = write_estimate(out, groups)
    return summary
