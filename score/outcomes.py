"""How good were the served predictions? Label every scored user from a later log and compare with the model card.

A user churned when the later log holds no event of theirs in ``(cutoff, cutoff + label_days]``: the rule the
model was trained on. The later log must cover that window (it may start up to a day after the cutoff, as a
daily export does), or every user who came back outside it would count as churned.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from common import classification as metrics
from common.events import EventColumns, open_event_log
from common.io import atomic_path, write_text_atomic
from score.model import ScoreError
from score.output import RECENCY, TOP_REASON, read_estimate, read_predictions

DEFAULT_LABEL_DAYS = 30
START_GRACE = timedelta(days=1)  # a later log may begin this long after the cutoff
RECENCY_TOLERANCE_DAYS = 1e-3  # ~1.5 minutes: the scored value is a float32
MIN_COMPARED_USERS = 20  # fewer users with history in the later log: nothing to check
MAX_DISAGREEING_SHARE = 0.1  # more of them placed elsewhere: another population's log
COMPARED = {  # figure: its label in the report
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (churners)",
    "precision": "precision at the served threshold",
    "recall": "recall at the served threshold",
    "f1": "F1 at the served threshold",
    "brier": "Brier score",
    "calibration_error": "expected calibration error",
    "predicted_churn_share": "share of users flagged",
}


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    figures: dict[str, Any]
    out: Path

    @property
    def degraded(self) -> bool:
        return bool(self.figures["degraded"])

    def line(self) -> str:
        f = self.figures
        test = f["test"].get("roc_auc")
        against = f"test {test:.3f}" if test is not None else "no test figure in the model"
        verdict = "DEGRADED" if self.degraded else "ok"
        return (
            f"{verdict}: realized ROC-AUC {f['realized']['roc_auc']:.3f} ({against}, tolerance {f['tolerance']}) "
            f"on {f['users']} users scored at {f['cutoff']}, churn {f['churn_rate']:.1%} -> {self.out}/"
        )


def _single(table: pa.Table, column: str) -> Any:
    values = table.column(column).unique().to_pylist()
    if len(values) != 1:
        raise ScoreError(f"predictions mix {len(values)} values of {column!r}: report one scoring run at a time")
    return values[0]


def check_tolerance(tolerance: float) -> None:
    """How far below the test ROC-AUC a realized one may fall: a share, from 0 to 1."""
    if not 0.0 <= tolerance <= 1.0:
        raise ScoreError(f"--tolerance must be between 0 and 1 (got {tolerance})")


def realized_labels(
    user_ids: pa.Array,
    events: Path,
    columns: EventColumns,
    cutoff: datetime,
    label_days: int,
    recency: pa.Array | None = None,
) -> np.ndarray:
    """``True`` for each scored user with no event in the label window of the later log, in ``user_ids`` order.

    Refused when the later log is not these users' (:func:`check_population`, with ``recency`` the scored
    ``days_since_last_event`` when the model has it)."""
    con = open_event_log(events, columns)
    ((first, last),) = con.execute("SELECT min(event_time), max(event_time) FROM events").fetchall()
    end = cutoff + timedelta(days=label_days)
    if first > cutoff + START_GRACE or last < end:
        raise ScoreError(
            f"the later log ({first.isoformat()} to {last.isoformat()}) does not cover the label window "
            f"{cutoff.isoformat()} to {end.isoformat()} ({label_days} days): it must reach from the cutoff "
            "(within a day) to the window's end"
        )
    con.register("scored", pa.table({"user_id": user_ids}))
    if recency is not None:
        check_population(con, user_ids, recency, cutoff)
    returned = con.execute(
        """SELECT s.user_id IN (SELECT DISTINCT CAST(user_id AS VARCHAR) FROM events
                                WHERE event_time > $cutoff AND event_time <= $end)
           FROM (SELECT CAST(user_id AS VARCHAR) AS user_id FROM scored) s""",
        {"cutoff": cutoff, "end": end},
    ).fetchnumpy()
    con.close()
    return ~next(iter(returned.values())).astype(bool)


def check_population(con: duckdb.DuckDBPyConnection, user_ids: pa.Array, recency: pa.Array, cutoff: datetime) -> None:
    """Refuse a later log that is another population's: where it holds the scored users' history up to the
    cutoff, each user's last event before the cutoff must be the one their scored ``days_since_last_event`` says
    (a simulated period with another seed has the same user ids and other histories: its labels would be noise)."""
    con.register("recency", pa.table({"user_id": user_ids, "days": recency}))
    ((compared, disagree),) = con.execute(
        f"""WITH last AS (  -- days_since_last_event as the feature catalogue computes it
                SELECT CAST(user_id AS VARCHAR) AS user_id,
                       date_diff('microsecond', max(event_time), $cutoff) / 86400e6 AS days
                FROM events WHERE event_time <= $cutoff GROUP BY 1)
            SELECT count(*), count(*) FILTER (WHERE abs(last.days - r.days) > {RECENCY_TOLERANCE_DAYS})
            FROM (SELECT CAST(user_id AS VARCHAR) AS user_id, days FROM recency) r JOIN last USING (user_id)""",
        {"cutoff": cutoff},
    ).fetchall()
    if compared >= MIN_COMPARED_USERS and disagree > compared * MAX_DISAGREEING_SHARE:
        raise ScoreError(
            f"the later log is not these users' history: of the {compared} scored users it has events of up to the "
            f"cutoff, {disagree} have their last one elsewhere than their scored days_since_last_event says; "
            "label the predictions with the log they were scored from, extended past the cutoff"
        )


def realized_figures(churned: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, Any]:
    """Every figure the model card gives for its test set, on the realized labels."""
    if churned.all() or not churned.any():
        raise ScoreError(
            f"every one of the {len(churned)} scored users {'churned' if churned.all() else 'came back'}: "
            "ROC-AUC is undefined; choose another --label-days"
        )
    return {
        "roc_auc": metrics.roc_auc(churned, probability),
        "pr_auc": metrics.average_precision(churned, probability),
        **metrics.at_threshold(churned, probability, threshold),
        "brier": metrics.brier(churned, probability),
        "calibration_error": metrics.expected_calibration_error(churned, probability),
    }


def report_outcomes(
    predictions: Path,
    events: Path,
    columns: EventColumns,
    label_days: int | None,
    tolerance: float,
    out: Path,
) -> OutcomeReport:
    """Label, measure, and write ``outcomes.json``, ``outcomes.md`` and ``reliability.png`` into ``out``."""
    check_tolerance(tolerance)
    table, record = read_predictions(predictions)
    label_days = label_days or record.get("label_days") or DEFAULT_LABEL_DAYS
    if label_days < 1:
        raise ScoreError(f"--label-days must be at least 1 (got {label_days})")
    cutoff: datetime = _single(table, "cutoff")
    threshold = float(_single(table, "threshold"))
    version = _single(table, "model_version")
    probability = table.column("churn_probability").to_numpy()
    recency = table.column(RECENCY).combine_chunks() if RECENCY in table.column_names else None
    churned = realized_labels(table.column("user_id").combine_chunks(), events, columns, cutoff, label_days, recency)
    realized = realized_figures(churned, probability, threshold)
    test = record.get("test_metrics", {})
    test_auc = test.get("roc_auc")
    figures = {
        "model_version": version,
        "model_sha256": record.get("model_sha256"),
        "cutoff": cutoff.isoformat(),
        "label_days": label_days,
        "label_window": [cutoff.isoformat(), (cutoff + timedelta(days=label_days)).isoformat()],
        "users": len(churned),
        "churn_rate": float(churned.mean()),
        "threshold": threshold,
        "realized": realized,
        "test": {key: test[key] for key in COMPARED if key in test},
        "tolerance": tolerance,
        "roc_auc_drop": None if test_auc is None else test_auc - realized["roc_auc"],
        "degraded": test_auc is not None and realized["roc_auc"] < test_auc - tolerance,
        "reliability": metrics.reliability(churned, probability),
    }
    estimate = read_estimate(predictions)
    if estimate is not None and estimate.get("estimated"):  # what score run expected, before any label existed
        figures["estimated"] = estimate["estimated"]
        figures["estimate_error"] = estimate["estimated"]["roc_auc"] - realized["roc_auc"]
    if TOP_REASON in table.column_names:
        figures["by_top_reason"] = by_top_reason(table.column(TOP_REASON).to_pylist(), churned, probability, threshold)
    png = reliability_plot(figures)
    write_text_atomic(out / "outcomes.json", json.dumps(figures, indent=2) + "\n")
    with atomic_path(out / "reliability.png") as tmp:
        tmp.write_bytes(png)
    write_text_atomic(out / "outcomes.md", render_markdown(figures))
    return OutcomeReport(figures, out)


def by_top_reason(
    reasons: list[str], churned: np.ndarray, probability: np.ndarray, threshold: float
) -> list[dict[str, Any]]:
    """Per strongest reason the run gave: its users, how many were flagged, and how many churned (which reasons
    the churners actually had), most users first."""
    groups = np.asarray(reasons, dtype=object)
    rows = []
    for reason in sorted(set(reasons), key=lambda r: (-reasons.count(r), r)):
        members = groups == reason
        flagged = probability[members] >= threshold
        rows.append(
            {
                "reason": reason,
                "users": int(members.sum()),
                "flagged": int(flagged.sum()),
                "churned": int(churned[members].sum()),
                "churn_rate": float(churned[members].mean()),
                "churned_among_flagged": float(churned[members][flagged].mean()) if flagged.any() else None,
                "share_of_churners": float(churned[members].sum() / max(1, churned.sum())),
            }
        )
    return rows


def render_markdown(figures: dict[str, Any]) -> str:
    realized, test = figures["realized"], figures["test"]

    def row(key: str, label: str) -> str:
        mine = realized[key]
        theirs = f"{test[key]:.3f}" if key in test else "–"
        change = f"{mine - test[key]:+.3f}" if key in test else "–"
        return f"| {label} | {mine:.3f} | {theirs} | {change} |"

    rows = "\n".join(row(key, label) for key, label in COMPARED.items())
    (tn, fp), (fn, tp) = realized["confusion_matrix"]
    verdict = (
        f"**Degraded:** the realized ROC-AUC is {figures['roc_auc_drop']:.3f} below the test ROC-AUC, more than the "
        f"tolerance of {figures['tolerance']}. Retrain on recent data, or look for drift (`python -m train drift`)."
        if figures["degraded"]
        else f"Within tolerance: the realized ROC-AUC is at most {figures['tolerance']} below the test ROC-AUC."
    )
    return f"""# Outcomes of {figures["model_version"]}

{figures["users"]} users scored at {figures["cutoff"]}, labeled from the later log: churned = no event in the
following {figures["label_days"]} days ({figures["label_window"][0]} to {figures["label_window"][1]}).
Realized churn rate {figures["churn_rate"]:.1%}; served threshold {figures["threshold"]:.4f}.

| figure | realized | model card (test set) | change |
|---|---|---|---|
{rows}

Confusion matrix at the served threshold: tn {tn}, fp {fp}, fn {fn}, tp {tp}.
{_estimate_line(figures)}{_reason_table(figures.get("by_top_reason"))}
{verdict}

![reliability](reliability.png)
"""


def _estimate_line(figures: dict[str, Any]) -> str:
    estimated = figures.get("estimated")
    if not estimated:
        return ""
    return (
        f"\nEstimated when scored, before any label (CBPE): ROC-AUC {estimated['roc_auc']:.3f} "
        f"({figures['estimate_error']:+.3f} against the realized), precision {estimated['precision']:.3f}, "
        f"recall {estimated['recall']:.3f}.\n"
    )


def _reason_table(rows: list[dict[str, Any]] | None) -> str:
    if not rows:
        return ""
    lines = [
        "",
        "Realized churn by each user's strongest reason (`score run --explain`):",
        "",
        "| strongest reason | users | flagged | churned | churn rate | share of all churners |",
        "|---|---|---|---|---|---|",
        *(
            f"| `{r['reason']}` | {r['users']} | {r['flagged']} | {r['churned']} | {r['churn_rate']:.1%} | "
            f"{r['share_of_churners']:.1%} |"
            for r in rows
        ),
        "",
    ]
    return "\n".join(lines)


def reliability_plot(figures: dict[str, Any]) -> bytes:
    """Observed churn rate against mean predicted probability per bin, with the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = figures["reliability"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(
        [b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker="o", label="realized (this period)"
    )
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title(f"{figures['model_version']}: ECE {figures['realized']['calibration_error']:.3f}")
    ax.legend(loc="upper left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
