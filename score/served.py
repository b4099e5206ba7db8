"""How good were the answers the server actually gave? Join the request log to a later event log by caller id.

Each logged answer with an ``id`` (the user id) is labelled as a nightly score is: the user churned when the later
log holds no event of theirs in ``(answered, answered + label_days]``. ``--cutoff`` takes every answer as given at
one time instead (a replayed period whose events live in another clock, as the simulator's do). A user answered
more than once by one model counts once, with that model's latest answer. Figures per model version that answered,
and, for the rows a shadow model also scored, both models on the same rows.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from common import classification
from common.events import EventColumns, open_event_log
from common.io import atomic_path, write_text_atomic
from score.model import ScoreError
from score.outcomes import (
    COMPARED,
    DEFAULT_LABEL_DAYS,
    START_GRACE,
    check_tolerance,
    realized_figures,
    reliability_plot,
)


@dataclass(frozen=True, slots=True)
class ServedReport:
    figures: dict[str, Any]
    out: Path

    @property
    def degraded(self) -> bool:
        return any(v.get("degraded") for v in self.figures["versions"].values())

    def line(self) -> str:
        parts = []
        for version, v in self.figures["versions"].items():
            test = v["test"].get("roc_auc")
            against = f" (test {test:.3f})" if test is not None else ""
            parts.append(f"{version} realized ROC-AUC {v['realized']['roc_auc']:.3f}{against} on {v['users']} users")
        for shadow in self.figures.get("shadows", []):
            parts.append(
                f"shadow {shadow['shadow_version']} {shadow['shadow']['roc_auc']:.3f} against "
                f"{shadow['served']['roc_auc']:.3f} served by {shadow['served_version']} on the same "
                f"{shadow['users']} users"
            )
        verdict = "DEGRADED" if self.degraded else "ok"
        return f"{verdict}: " + "; ".join(parts) + f" -> {self.out}/"


def _files(served: str) -> list[str]:
    files = sorted(glob.glob(served)) if glob.has_magic(served) else [served]
    missing = [f for f in files if not Path(f).is_file()]
    if not files or missing:
        raise ScoreError(f"request log {served!r} matches no file" if not files else f"no request log {missing[0]!r}")
    return files


# An id as text whatever type the reader gave its column (integers, strings, or JSON when a log holds both).
USER_ID = "json_extract_string(to_json(id), '$')"


def read_answers(served: str) -> duckdb.DuckDBPyConnection:
    """A connection with an ``answers`` view: the latest answer per (id, model version) of the logs at ``served``
    (a file or a glob: the rotated files and the current one)."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.execute(
            # Every line read to infer the types: ids may be integers in the first thousands of lines and strings
            # later (both are caller ids), which a sample would type as integers and then fail on.
            # A line cut short by a full disk (the server ends it and counts its rows as dropped) is skipped.
            "CREATE TABLE lines AS SELECT * FROM read_json($files, format='newline_delimited', union_by_name=true,"
            " sample_size=-1, ignore_errors=true)",
            {"files": _files(served)},
        )
    except duckdb.Error as exc:
        raise ScoreError(f"cannot read request log {served!r}: {str(exc).splitlines()[0]}") from None
    names = {row[0] for row in con.execute("SELECT column_name FROM (DESCRIBE lines)").fetchall()}
    needed = {"ts", "id", "churn_probability", "threshold", "model_version"}
    if not needed <= names:
        missing = sorted(needed - names)
        raise ScoreError(
            f"request log {served!r} has no {missing[0]!r} field"
            + (": send an 'id' with each row to join answers to outcomes" if "id" in missing else "")
        )
    shadow = (
        "shadow_probability, shadow_model_version"
        if "shadow_probability" in names
        else ("NULL::DOUBLE AS shadow_probability, NULL::VARCHAR AS shadow_model_version")
    )
    con.execute(
        f"""CREATE VIEW answers AS
            SELECT {USER_ID} AS user_id, CAST(ts AS TIMESTAMP) AS answered, churn_probability, threshold,
                   model_version, {shadow}
            FROM lines WHERE id IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY {USER_ID}, model_version ORDER BY ts DESC) = 1"""
    )
    return con


def report_served_outcomes(
    served: str,
    events: Path,
    columns: EventColumns,
    label_days: int | None,
    tolerance: float,
    out: Path,
    cutoff: datetime | None = None,
    test_metrics: dict[str, dict[str, Any]] | None = None,
) -> ServedReport:
    """Label every logged answer from the later log; write ``outcomes.json``, ``outcomes.md``, ``reliability.png``.
    ``test_metrics``: a model card's test figures per model version, to judge each against."""
    check_tolerance(tolerance)
    label_days = label_days or DEFAULT_LABEL_DAYS
    if label_days < 1:
        raise ScoreError(f"--label-days must be at least 1 (got {label_days})")
    con = read_answers(served)
    table = con.sql("SELECT * FROM answers ORDER BY model_version, user_id").to_arrow_table()
    if table.num_rows == 0:
        raise ScoreError(f"request log {served!r} holds no answer with an 'id': nothing to join to outcomes")
    answered = table.column("answered").to_pylist()
    if cutoff is not None:
        answered = [cutoff] * len(answered)
    churned = _churned(table.column("user_id").to_pylist(), answered, events, columns, label_days)
    versions = np.asarray(table.column("model_version").to_pylist(), dtype=object)
    probability = table.column("churn_probability").to_numpy(zero_copy_only=False).astype(np.float64)
    threshold = table.column("threshold").to_numpy(zero_copy_only=False).astype(np.float64)
    figures: dict[str, Any] = {"label_days": label_days, "tolerance": tolerance, "versions": {}}
    figures["answered"] = [min(answered).isoformat(), max(answered).isoformat()]
    for version in sorted(set(versions.tolist())):
        rows = versions == version
        served_threshold = float(threshold[rows][0])
        realized = realized_figures(churned[rows], probability[rows], served_threshold)
        test = (test_metrics or {}).get(version, {})
        figures["versions"][version] = {
            "users": int(rows.sum()),
            "churn_rate": float(churned[rows].mean()),
            "threshold": served_threshold,
            "realized": realized,
            "test": {key: test[key] for key in COMPARED if key in test},
            "degraded": "roc_auc" in test and realized["roc_auc"] < test["roc_auc"] - tolerance,
            "reliability": classification.reliability(churned[rows], probability[rows]),
        }
    # One comparison per (served version, shadow version): each candidate judged on the rows it scored, beside the
    # model that answered them, at that model's threshold (review M5: they were pooled under the first candidate).
    shadow_scores = table.column("shadow_probability").to_pylist()
    shadow_versions = table.column("shadow_model_version").to_pylist()
    figures["shadows"] = []
    for served_version, shadow_version in sorted({(v, s) for v, s in zip(versions, shadow_versions, strict=True) if s}):
        rows = np.array(
            [v == served_version and s == shadow_version for v, s in zip(versions, shadow_versions, strict=True)]
        )
        shadow_p = np.array([p for p, keep in zip(shadow_scores, rows, strict=True) if keep], dtype=np.float64)
        at = float(threshold[rows][0])
        figures["shadows"].append(
            {
                "served_version": served_version,
                "shadow_version": shadow_version,
                "users": int(rows.sum()),
                "threshold": at,
                "served": realized_figures(churned[rows], probability[rows], at),
                "shadow": realized_figures(churned[rows], shadow_p, at),
            }
        )
    write_text_atomic(out / "outcomes.json", json.dumps(figures, indent=2) + "\n")
    main = max(figures["versions"], key=lambda v: figures["versions"][v]["users"])
    plotted = figures["versions"][main]
    png = reliability_plot(
        {"model_version": main, "realized": plotted["realized"], "reliability": plotted["reliability"]}
    )
    with atomic_path(out / "reliability.png") as tmp:
        tmp.write_bytes(png)
    write_text_atomic(out / "outcomes.md", render_markdown(figures))
    return ServedReport(figures, out)


def _churned(
    users: list[str], answered: list[datetime], events: Path, columns: EventColumns, label_days: int
) -> np.ndarray:
    """``True`` for each answer whose user has no event in the later log within ``label_days`` after it."""
    con = open_event_log(events, columns)
    ((first, last),) = con.execute("SELECT min(event_time), max(event_time) FROM events").fetchall()
    start, end = min(answered), max(answered) + timedelta(days=label_days)
    if first > start + START_GRACE or last < end:
        raise ScoreError(
            f"the later log ({first.isoformat()} to {last.isoformat()}) does not cover the answers' label windows "
            f"{start.isoformat()} to {end.isoformat()} ({label_days} days after each answer)"
        )
    con.register("answered", pa.table({"i": np.arange(len(users)), "user_id": users, "at": answered}))
    returned = con.execute(
        """SELECT a.i, count(e.user_id) > 0 AS back
           FROM answered a LEFT JOIN (SELECT CAST(user_id AS VARCHAR) AS user_id, event_time FROM events) e
             ON e.user_id = a.user_id AND e.event_time > a.at AND e.event_time <= a.at + to_days($days)
           GROUP BY a.i ORDER BY a.i""",
        {"days": label_days},
    ).fetchnumpy()
    con.close()
    return ~returned["back"].astype(bool)


def render_markdown(figures: dict[str, Any]) -> str:
    lines = [
        "# Outcomes of the answers served",
        "",
        f"Answers given {figures['answered'][0]} to {figures['answered'][1]}, each labelled from the later log: "
        f"churned = no event in the {figures['label_days']} days after the answer.",
        "",
        "| model version | users | churn rate | ROC-AUC | test ROC-AUC | precision | recall | ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for version, v in figures["versions"].items():
        r, test = v["realized"], v["test"].get("roc_auc")
        lines.append(
            f"| {version} | {v['users']} | {v['churn_rate']:.1%} | {r['roc_auc']:.3f} | "
            f"{'–' if test is None else f'{test:.3f}'} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['calibration_error']:.3f} |"
        )
    for shadow in figures.get("shadows", []):
        s, m = shadow["shadow"], shadow["served"]
        lines += [
            "",
            f"Shadow `{shadow['shadow_version']}` against `{shadow['served_version']}`, which served the same "
            f"{shadow['users']} users (decisions at the served threshold {shadow['threshold']:.4f}):",
            "",
            "| model | ROC-AUC | precision | recall | F1 | Brier |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {f['roc_auc']:.3f} | {f['precision']:.3f} | {f['recall']:.3f} | {f['f1']:.3f} | "
                f"{f['brier']:.3f} |"
                for name, f in (("served", m), ("shadow", s))
            ),
        ]
    lines += ["", "![reliability](reliability.png)", ""]
    return "\n".join(lines)
