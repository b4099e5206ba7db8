"""The same features and scores on Spark: the feature SQL transpiled from DuckDB's, one onnxruntime per worker.

Spark runs the one feature query of :func:`common.features.features_query`, translated from DuckDB's dialect by
sqlglot (never a second hand-kept copy), and scores each partition with ``mapInArrow``: every Python worker builds
its onnxruntime session once from the model bytes broadcast by the driver, then scores Arrow batches as the
DuckDB engine does (:func:`score.output.with_predictions`). Nothing here depends on the cluster: ``--master`` (or
``spark-submit``) says where it runs, and the paths may be anything Spark reads and writes (``s3a://``, ``hdfs://``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlglot

from common.classification import ESTIMATE_BINS, ScoreGroups
from common.events import EventColumns, refuse_bad_values
from common.features import features_query, timestamp_literal
from score.model import ScoreError, ScoringSpec, check_cutoff, load_for_scoring, worker_model
from score.output import (
    RUN_RECORD_FILE,
    prediction_fields,
    scored_batch,
    write_estimate,
    write_run_record,
)
from score.summary import RunSummary

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

_PYTHON_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_WORKER_MODELS: dict[str, Any] = {}  # per Python worker: sha256 -> Model, built on the first partition


def spark_sql(duckdb_sql: str) -> str:
    """DuckDB SQL in Spark's dialect."""
    return sqlglot.transpile(duckdb_sql, read="duckdb", write="spark")[0]


def spark_session(master: str | None, conf: dict[str, str] | None = None) -> SparkSession:
    """The session to run on: ``master``, else spark-submit's, else ``local[*]``, with ``conf`` on top.

    Timestamps are read and cut into days in UTC, as DuckDB does; a local master keeps all traffic on loopback.
    """
    from pyspark.sql import SparkSession

    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started us and said where to run
    if master is None and not submitted:
        master = "local[*]"
    builder = SparkSession.builder.appName("pulse-score")
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers need this interpreter's packages
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        builder = builder.config("spark.ui.enabled", "false")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.timestampType", "TIMESTAMP_NTZ")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def _read_raw(spark: SparkSession, path: str) -> DataFrame:
    lower = path.lower()
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        return spark.read.csv(path, header=True, inferSchema=True, sep="\t" if lower.endswith(".tsv") else ",")
    if lower.endswith((".parquet", ".pq")) or not Path(path).suffix:
        return spark.read.parquet(path)
    raise ScoreError(f"event log {path!r}: unknown format (expected .parquet, .csv, .csv.gz or .tsv)")


def _error_line(exc: BaseException) -> str:
    """The line of a Spark error that says what went wrong (a worker's exception, not the JVM's preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    raised = [line for line in lines if _PYTHON_ERROR.match(line)]
    return raised[-1] if raised else (lines[0] if lines else type(exc).__name__)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def open_events(spark: SparkSession, path: str, columns: EventColumns) -> None:
    """Register the view ``events(user_id, event_time, session_id, revenue)``, checked as DuckDB's loader checks."""
    from pyspark.errors import PySparkException
    from pyspark.sql.types import DateType, NumericType, StringType, TimestampNTZType, TimestampType

    try:
        raw = _read_raw(spark, path)
    except PySparkException as exc:
        raise ScoreError(f"cannot read event log {path!r}: {_error_line(exc)}") from None
    types = {field.name: field.dataType for field in raw.schema.fields}
    for name in (c for c in (columns.user, columns.time, columns.session, columns.revenue) if c is not None):
        if name not in types:
            raise ScoreError(f"event log is missing column {name!r} (it has: {', '.join(types)})")
    if raw.isEmpty():
        raise ScoreError(f"event log {path!r} is empty")
    raw.createOrReplaceTempView("raw_events")

    time = _quote(columns.time)
    if isinstance(types[columns.time], TimestampType | TimestampNTZType | DateType):
        time_sql = f"CAST({time} AS TIMESTAMP_NTZ)"
    elif isinstance(types[columns.time], StringType):
        time_sql = f"try_cast({time} AS TIMESTAMP_NTZ)"
    else:
        raise ScoreError(
            f"column {columns.time!r} must hold timestamps, found type {types[columns.time].simpleString()}"
        )
    if columns.revenue is None:
        revenue_sql = "CAST(0.0 AS DOUBLE)"
    elif isinstance(types[columns.revenue], NumericType):
        revenue_sql = f"COALESCE(CAST({_quote(columns.revenue)} AS DOUBLE), CAST(0.0 AS DOUBLE))"
    else:
        found = types[columns.revenue].simpleString().upper()
        raise ScoreError(f"column {columns.revenue!r} must be numeric revenue, found type {found}")
    session_sql = "CAST(NULL AS BIGINT)" if columns.session is None else _quote(columns.session)
    empty_sessions_sql = "0" if columns.session is None else f"count_if({session_sql} IS NULL)"
    user = _quote(columns.user)
    bad_time, example_time, null_users, null_sessions, negative, lowest = spark.sql(
        f"""SELECT count_if({time_sql} IS NULL),
                   first(CAST({time} AS STRING)) FILTER (WHERE {time_sql} IS NULL),
                   count_if({user} IS NULL), {empty_sessions_sql},
                   count_if({revenue_sql} < 0), min({revenue_sql})
            FROM raw_events"""
    ).collect()[0]
    refuse_bad_values(columns, bad_time, example_time, null_users, null_sessions, negative, lowest)
    spark.sql(
        f"""CREATE OR REPLACE TEMP VIEW events AS
            SELECT {user} AS user_id, {time_sql} AS event_time, {session_sql} AS session_id, {revenue_sql} AS revenue
            FROM raw_events"""
    )


def _score_partition(
    batches: Iterator[pa.RecordBatch], model_bytes: Any, spec: ScoringSpec, cutoff: datetime, explain: int
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: runs in a Python worker, with that worker's one onnxruntime session."""
    model = worker_model(model_bytes.value, _WORKER_MODELS, spec.sha256)
    for batch in batches:
        yield scored_batch(model, batch, spec, cutoff, explain)


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def score_on_spark(
    events: str,
    columns: EventColumns,
    model_path: Path,
    out: str,
    cutoff: datetime | None = None,
    master: str | None = None,
    spark: SparkSession | None = None,
    conf: dict[str, str] | None = None,
    explain: int = 0,
) -> RunSummary:
    """Write ``out`` (a folder of Parquet part files and the run record): every user and their score."""
    from pyspark.errors import PySparkException
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    summary = RunSummary("spark", out)
    if _is_local(out):
        _check_replaceable(Path(out.removeprefix("file://")))
    with summary.timed("load"):
        _, spec, model_bytes = load_for_scoring(model_path, explain)
        spark = spark or spark_session(master, conf)
        open_events(spark, events, columns)
        first, last = spark.sql("SELECT min(event_time), max(event_time) FROM events").collect()[0]
        cutoff = check_cutoff(cutoff, first, last)
    query = spark_sql(features_query(spec.features, cutoff, columns.session is None, ordered=False))
    logger.debug("spark feature query at cutoff %s:\n%s", timestamp_literal(cutoff), query)
    broadcast = spark.sparkContext.broadcast(model_bytes)
    score = functools.partial(_score_partition, model_bytes=broadcast, spec=spec, cutoff=cutoff, explain=explain)
    try:
        features = spark.sql(query)
        added = [StructField(f.name, from_arrow_type(f.type), nullable=True) for f in prediction_fields(explain)]
        scored = features.mapInArrow(score, StructType([*features.schema.fields, *added]))
    except PySparkException as exc:
        raise ScoreError(f"cannot build the model's features on Spark: {_error_line(exc)}") from None

    # A local folder appears whole or not at all: Spark writes beside it, and the finished folder is renamed in.
    staging = f"{out.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}" if _is_local(out) else out
    try:
        with summary.timed("features+score+write"):
            scored.write.mode("errorifexists").parquet(staging)
        with summary.timed("count"):
            counts = spark.read.parquet(staging).selectExpr("count(*)", "count_if(churn)").collect()[0]
        summary.users, summary.churners = int(counts[0]), int(counts[1])
        if summary.users == 0:
            raise ScoreError(f"no user has an event at or before the cutoff {cutoff.isoformat()}")
        write_run_record(staging, spec.record(cutoff, "spark"))
        with summary.timed("estimate"):
            groups = _score_groups(spark.read.parquet(staging), spec.threshold)
        if staging != out:
            _replace_folder(Path(staging.removeprefix("file://")), Path(out.removeprefix("file://")))
        if _is_local(out):
            summary.estimate = write_estimate(Path(out.removeprefix("file://")), groups)
        else:
            summary.estimate = groups.estimate()
    except PySparkException as exc:
        raise ScoreError(f"spark could not score {events!r}: {_error_line(exc)}") from None
    finally:
        if staging != out:
            shutil.rmtree(staging.removeprefix("file://"), ignore_errors=True)
    broadcast.unpersist()
    return summary


def _score_groups(scored: Any, threshold: float) -> ScoreGroups:
    """The run's scores counted for the performance estimate, on the cluster: one row per score bin comes back."""
    bins = scored.selectExpr(
        f"least(greatest(cast(floor(churn_probability * {ESTIMATE_BINS}) AS int), 0), {ESTIMATE_BINS - 1}) AS bin",
        "churn_probability AS p",
        f"churn_probability >= {threshold!r} AS flagged",
    )
    groups = ScoreGroups(threshold)
    counts, sums = [0.0] * ESTIMATE_BINS, [0.0] * ESTIMATE_BINS
    flagged_rows = flagged_sum = 0.0
    for row in bins.groupBy("bin", "flagged").agg({"p": "sum", "*": "count"}).collect():
        n, total = float(row["count(1)"]), float(row["sum(p)"])
        counts[row["bin"]] += n
        sums[row["bin"]] += total
        if row["flagged"]:
            flagged_rows += n
            flagged_sum += total
    groups.add_counts(counts, sums, flagged_rows, flagged_sum)
    return groups


def _check_replaceable(target: Path) -> None:
    """Refuse, before any work, an output that is not an earlier run's folder: it would be replaced whole."""
    if not target.exists():
        return
    earlier_run = target.is_dir() and ((target / RUN_RECORD_FILE).is_file() or not any(target.iterdir()))
    if not earlier_run:
        raise ScoreError(
            f"output {str(target)!r} exists and is not an earlier score run's folder: choose another --out"
        )


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an earlier output only once the new one is complete."""
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
