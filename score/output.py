"""The predictions table: its columns, how a chunk of scored users becomes rows of it, and its run record.

Both engines build their rows here, so a churn flag means the same thing whichever engine wrote it. The run
record (model version, sha256, threshold, label window, the model card's test figures) travels in the Parquet
footer of a single file, or as ``_pulse_run.json`` beside the part files of a folder (Spark's output), where
Parquet readers skip it as they skip ``_SUCCESS``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

from common.classification import ScoreGroups
from common.io import write_text_atomic
from common.model.loader import Model
from common.model.reasons import strongest
from score.model import ScoreError, ScoringSpec

RUN_RECORD_KEY = b"pulse.run"
RUN_RECORD_FILE = "_pulse_run.json"
ESTIMATE_FILE = "_pulse_estimate.json"  # in a folder; beside a single file as <name>.estimate.json
OUTCOME_COLUMNS = ("user_id", "churn_probability", "threshold", "model_version", "cutoff")
TOP_REASON = "reason_1"  # each user's strongest reason, when the run was asked --explain
RECENCY = "days_since_last_event"  # a later log's history is checked against it (score outcomes)


def prediction_fields(explain: int = 0) -> list[pa.Field]:
    """The columns appended to ``user_id`` and the features, in order; with ``explain=K``, each user's K strongest
    reasons after them: ``reason_i`` (the feature), ``reason_i_value`` (its value), ``reason_i_contribution`` (its
    SHAP contribution to the probability), strongest first."""
    return [
        pa.field("churn_probability", pa.float64()),
        pa.field("churn", pa.bool_()),
        pa.field("threshold", pa.float64()),
        pa.field("model_version", pa.string()),
        pa.field("cutoff", pa.timestamp("us")),
        *(
            field
            for i in range(1, explain + 1)
            for field in (
                pa.field(f"reason_{i}", pa.string()),
                pa.field(f"reason_{i}_value", pa.float64()),
                pa.field(f"reason_{i}_contribution", pa.float64()),
            )
        ),
    ]


def scored_batch(
    model: Model, batch: pa.RecordBatch, spec: ScoringSpec, cutoff: datetime, explain: int
) -> pa.RecordBatch:
    """One chunk of users scored, and explained when ``explain`` > 0 (in the same onnxruntime call): what both
    engines write."""
    X = feature_matrix(batch, spec.names)
    if not explain:
        return with_predictions(batch, model.churn_probability(X), spec, cutoff)
    probabilities, contributions = model.explain(X)
    scored = with_predictions(batch, probabilities[:, model.info.positive_index], spec, cutoff)
    order = strongest(contributions, explain)  # as the server's reasons
    names = np.asarray(spec.names, dtype=object)
    rows = np.arange(len(X))
    columns = []
    for i in range(explain):
        j = order[:, i]
        columns += [
            pa.array(names[j], pa.string()),
            pa.array(X[rows, j].astype(np.float64)),
            pa.array(contributions[rows, j]),
        ]
    fields = prediction_fields(explain)[len(prediction_fields()) :]
    return pa.RecordBatch.from_arrays([*scored.columns, *columns], schema=pa.schema([*scored.schema, *fields]))


def feature_matrix(batch: pa.RecordBatch, names: list[str]) -> npt.NDArray[np.float32]:
    """The model's input rows: the batch's feature columns in the model's order, as float32."""
    X = np.empty((batch.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        X[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    finite = np.isfinite(X)
    if not finite.all():  # the server would answer 422 for such a row: refuse rather than score a guess
        bad = int(np.argmin(finite.all(axis=0)))
        raise ScoreError(f"feature {names[bad]!r} is not a finite number for {int((~finite[:, bad]).sum())} users")
    return X


def with_predictions(
    batch: pa.RecordBatch, probabilities: npt.NDArray[np.float32], spec: ScoringSpec, cutoff: datetime
) -> pa.RecordBatch:
    """``batch`` (user_id and features) with the prediction columns appended.

    The flag is the server's rule: the float32 probability compared with the threshold, ``p >= threshold``.
    """
    n = batch.num_rows
    p = probabilities.astype(np.float64)
    columns = [
        pa.array(p),
        pa.array(p >= spec.threshold),
        pa.repeat(pa.scalar(spec.threshold, pa.float64()), n),
        pa.repeat(pa.scalar(spec.version, pa.string()), n),
        pa.repeat(pa.scalar(cutoff, pa.timestamp("us")), n),
    ]
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *columns], schema=pa.schema([*batch.schema, *prediction_fields()])
    )


def write_run_record(folder: str, record: dict[str, Any]) -> None:
    """``_pulse_run.json`` inside an output folder, on any filesystem pyarrow reaches (local, s3://, hdfs://)."""
    filesystem, path = pa_fs.FileSystem.from_uri(folder) if "://" in folder else (pa_fs.LocalFileSystem(), folder)
    with filesystem.open_output_stream(f"{path.rstrip('/')}/{RUN_RECORD_FILE}") as stream:
        stream.write((json.dumps(record, indent=2) + "\n").encode())


def read_run_record(path: Path) -> dict[str, Any]:
    """The run record of a predictions file or folder; :class:`ScoreError` when it has none."""
    try:
        if path.is_dir():
            record_file = path / RUN_RECORD_FILE
            if not record_file.is_file():
                raise ScoreError(f"predictions folder {str(path)!r} has no {RUN_RECORD_FILE}: not written by score run")
            record: dict[str, Any] = json.loads(record_file.read_text())
            return record
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid, json.JSONDecodeError) as exc:
        raise ScoreError(f"cannot read predictions {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if RUN_RECORD_KEY not in metadata:
        raise ScoreError(f"predictions file {str(path)!r} has no run record: not written by `python -m score run`")
    record = json.loads(metadata[RUN_RECORD_KEY])
    return record


def read_predictions(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The columns the outcome report needs, and the run record."""
    if not path.exists():
        raise ScoreError(f"predictions {str(path)!r} do not exist")
    record = read_run_record(path)
    try:
        names = set(pads.dataset(path, format="parquet").schema.names)
        optional = (TOP_REASON, RECENCY)  # the top reason with --explain; recency when the model has it
        wanted = [*OUTCOME_COLUMNS, *(name for name in optional if name in names)]
        table = pq.read_table(path, columns=wanted)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ScoreError(f"cannot read predictions {str(path)!r}: {str(exc).splitlines()[0]}") from None
    return table, record


def estimate_path(out: Path) -> Path:
    """Where a run's performance estimate is written: inside a folder of part files, beside a single file."""
    return out / ESTIMATE_FILE if out.is_dir() else out.with_name(out.name + ".estimate.json")


def write_estimate(out: Path, groups: ScoreGroups) -> dict[str, float] | None:
    """Write the run's expected ROC-AUC, precision, recall and F1 at the served threshold (CBPE: each score taken
    as the chance of churn, valid while the model stays calibrated); the figures, ``None`` when undefined."""
    estimate = groups.estimate()
    record = {
        "method": "CBPE: each probability taken as the chance of churn (valid while the model stays calibrated)",
        "rows": int(groups.rows),
        "threshold": groups.threshold,
        "estimated": estimate,
    }
    write_text_atomic(estimate_path(out), json.dumps(record, indent=2) + "\n")
    return estimate


def read_estimate(predictions: Path) -> dict[str, Any] | None:
    """The estimate ``score run`` wrote for ``predictions``, ``None`` when it wrote none."""
    try:
        found: dict[str, Any] = json.loads(estimate_path(predictions).read_text())
    except (OSError, ValueError):
        return None
    return found
