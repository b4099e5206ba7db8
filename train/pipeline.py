"""The training run: event log -> features -> labels -> forest -> evaluation -> artifacts.

Every artifact is computed before the first one is written, and each is written atomically, so a failed run
leaves the previous artifacts as they were.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from common.events import EventColumns, open_event_log, timestamps_are_dates
from common.features import build_features, feature_set
from common.io import atomic_path, write_text_atomic
from train import evaluate
from train.config import TrainConfig
from train.explain import shap_summary
from train.fit import (
    NEAR_DEGENERATE_CHURN_SHARE,
    NEAR_DEGENERATE_RETAINED_RECALL,
    fit_baseline,
    fit_forest,
    split_data,
)
from train.labels import check_label_window, default_cutoff, make_labels

logger = logging.getLogger(__name__)

PLOTS = {
    "confusion_matrix": "confusion_matrix.png",
    "roc": "roc.png",
    "precision_recall": "precision_recall.png",
    "feature_importance": "feature_importance.png",
    "calibration": "calibration.png",
    "shap_summary": "shap_summary.png",
    "reference_histograms": "reference_histograms.png",
}


def run_training(config: TrainConfig) -> dict[str, Any]:
    """Run every stage and write ``features.parquet``, ``model.joblib``, ``metrics.json`` and the plots."""
    started = time.perf_counter()
    columns = EventColumns(config.user_col, config.time_col, config.session_col, config.revenue_col)
    con = open_event_log(config.events, columns)
    cutoff = config.cutoff or default_cutoff(con, config.label_days)
    check_label_window(con, cutoff, config.label_days)
    features = feature_set(config.feature_set)
    names = [f.name for f in features]
    table = build_features(con, cutoff, config.session_col is None, features)
    table["churned"] = make_labels(con, table["user_id"], cutoff, config.label_days)
    dates_only = timestamps_are_dates(con)
    con.close()
    if dates_only:
        logger.warning(
            "every timestamp is a date: sessions%s equal calendar days, so total_sessions == active_days",
            " (split at 30-minute gaps)" if config.session_col is None else "",
        )

    X, y = table[names], table["churned"]
    split = split_data(X, y, config.test_size, config.seed)
    forest = fit_forest(split.X_train, split.y_train, config.cv_folds, config.auc_tolerance, config.seed)
    baseline = fit_baseline(split.X_train, split.y_train, config.seed)
    threshold = forest.threshold.threshold

    # The one and only look at the test set.
    y_proba = forest.model.predict_proba(split.X_test)[:, 1]
    baseline_proba = baseline.predict_proba(split.X_test)[:, 1]
    test = evaluate.test_metrics(split.y_test, y_proba, threshold)
    logger.info("test roc_auc=%.4f f1=%.4f", test["roc_auc"], test["f1"])

    trained_at = datetime.now(UTC).replace(microsecond=0)
    metrics: dict[str, Any] = {
        "model_version": f"rf-{trained_at:%Y%m%dT%H%M%SZ}",
        "trained_at": trained_at.isoformat(),
        "feature_set": config.feature_set,
        "features": names,
        "feature_schema": [f.schema() for f in features],
        "timestamps_are_dates": dates_only,
        "threshold": threshold,
        "threshold_source": "validation",
        "threshold_rule": "churn = churn_probability >= threshold",
        "threshold_tuning": {
            "method": f"max F1 on the precision-recall curve of {config.cv_folds}-fold out-of-fold predictions",
            "validation_f1": forest.threshold.best_f1,
            "validation_precision": forest.threshold.precision,
            "validation_recall": forest.threshold.recall,
            "degenerate": forest.threshold.degenerate,
            "near_degenerate": forest.threshold.near_degenerate,
            "near_degenerate_rule": f"calls >= {NEAR_DEGENERATE_CHURN_SHARE:.0%} of validation users churners, or "
            f"recognises < {NEAR_DEGENERATE_RETAINED_RECALL:.0%} of those who stay",
            "validation_predicted_churn_share": forest.threshold.predicted_churn_share,
            "validation_retained_recall": forest.threshold.retained_recall,
            "validation_everyone_churns_f1": forest.threshold.everyone_churns_f1,
        },
        "test": test,
        "baseline_logreg": {"roc_auc": float(evaluate.roc_auc_score(split.y_test, baseline_proba))},
        "n_users": len(table),
        "n_train": len(split.X_train),
        "n_test": len(split.X_test),
        "churn_rate": float(y.mean()),
        "cutoff": cutoff.isoformat(),
        "label_days": config.label_days,
        "params": forest.params,
        "node_count": forest.node_count,
        "cv_results": forest.cv_results,
        "feature_importance": dict(zip(names, map(float, forest.model.feature_importances_), strict=True)),
        "train_feature_summary": {
            name: {
                "mean": float(split.X_train[name].mean()),
                "p50": float(split.X_train[name].median()),
                "max": float(split.X_train[name].max()),
            }
            for name in names
        },
        "config": config.to_json(),
    }

    plots = _render_plots(forest.model, split, y_proba, baseline_proba, metrics)
    plots["shap_summary"], metrics["shap_mean_abs"] = shap_summary(
        forest.model, split.X_test, config.shap_rows, config.seed
    )
    metrics["elapsed_seconds"] = round(time.perf_counter() - started, 2)

    # Every artifact is computed: only now does anything reach the disk.
    table["split"] = "train"
    table.loc[split.X_test.index, "split"] = "test"
    out, report = config.out, config.report_dir
    with atomic_path(out / "features.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(out / "model.joblib") as tmp:
        joblib.dump(forest.model, tmp)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    for name, png in plots.items():
        with atomic_path(report / PLOTS[name]) as tmp:
            tmp.write_bytes(png)
    write_text_atomic(report / "model_card.md", render_model_card(metrics))
    return metrics


def write_features(
    events: Path, out: Path, columns: EventColumns, cutoff: datetime | None, feature_set_name: str
) -> int:
    """Per-user features of ``events`` up to ``cutoff`` (default: the last event) into ``out``; returns users."""
    con = open_event_log(events, columns)
    if cutoff is None:
        (cutoff,) = con.execute("SELECT max(event_time) FROM events").fetchone()  # type: ignore[misc]
    table = build_features(con, cutoff, columns.session is None, feature_set(feature_set_name))
    con.close()
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return len(table)


def _render_plots(
    model: Any, split: Any, y_proba: Any, baseline_proba: Any, metrics: dict[str, Any]
) -> dict[str, bytes]:
    threshold = metrics["threshold"]
    return {
        "confusion_matrix": evaluate.plot_confusion_matrix(metrics["test"]["confusion_matrix"], threshold),
        "roc": evaluate.plot_roc(split.y_test, y_proba, baseline_proba),
        "precision_recall": evaluate.plot_precision_recall(split.y_test, y_proba, threshold),
        "feature_importance": evaluate.plot_feature_importance(list(split.X_train.columns), model.feature_importances_),
        "calibration": evaluate.plot_calibration(split.y_test, y_proba),
        "reference_histograms": evaluate.plot_reference_histograms(split.X_train),
    }


def _prf(scores: dict[str, Any]) -> str:
    return f"{scores['precision']:.3f} / {scores['recall']:.3f} / {scores['f1']:.3f}"


def render_model_card(metrics: dict[str, Any]) -> str:
    """A short markdown model card that links the plots."""
    test, tuning = metrics["test"], metrics["threshold_tuning"]
    tuned, half = test, test["at_0.5"]
    (tn, fp), (fn, tp) = test["confusion_matrix"]
    notes = []
    if tuning["near_degenerate"]:
        notes.append(
            f"**Near-degenerate threshold** ({tuning['near_degenerate_rule']}): on validation it calls "
            f"{tuning['validation_predicted_churn_share']:.1%} of users churners and recognises "
            f"{tuning['validation_retained_recall']:.1%} of those who stay. Churn is the majority here, so F1 mostly "
            f"reflects the base rate (tuned {tuning['validation_f1']:.3f} vs "
            f"{tuning['validation_everyone_churns_f1']:.3f} for calling everyone churned); rank users by the "
            "probability rather than trusting the flag."
        )
    if metrics.get("timestamps_are_dates"):
        notes.append(
            "**Date-only timestamps:** the log has no time of day, so sessions are calendar days "
            "(`total_sessions == active_days` for every user) and the session features add nothing over the days."
        )
    baseline_auc = metrics["baseline_logreg"]["roc_auc"]
    if baseline_auc >= test["roc_auc"]:
        notes.append(
            f"The logistic-regression baseline reaches ROC-AUC {baseline_auc:.3f} on the same split, as good as the "
            "forest or better."
        )
    rows = "\n".join(
        f"| `{f['name']}` | {f['description']} | {f['unit']} | {f['minimum']:g} |" for f in metrics["feature_schema"]
    )
    recency = "days_since_last_event" in metrics["features"]
    limits = (
        "Recency enters through `days_since_last_event`, measured at the cutoff: score users with features "
        "computed at the time of scoring (`python -m train features --cutoff ...`), or a user who stopped yesterday "
        "looks as recent as one active today."
        if recency
        else "The features carry no recency, so a user who was very active and then stopped looks like an active "
        "user until the features are refreshed (the `behaviour` feature set adds recency)."
    )
    notes_text = "".join(f"\n> {note}\n" for note in notes)
    return f"""# Model card: {metrics["model_version"]}

RandomForest churn classifier trained {metrics["trained_at"]} on {metrics["n_users"]} users
(cutoff {metrics["cutoff"]}, churned = no event in the following {metrics["label_days"]} days;
churn rate {metrics["churn_rate"]:.1%}). Hyper-parameters {metrics["params"]} were chosen by cross-validation on the
training part as the smallest forest ({metrics["node_count"]} nodes) within {metrics["config"]["auc_tolerance"]}
ROC-AUC of the best.

## Inputs: feature set `{metrics["feature_set"]}`
| feature | meaning | unit | minimum |
|---|---|---|---|
{rows}

## Test set ({metrics["n_test"]} users, scored once)
| metric | value |
|---|---|
| ROC-AUC | {test["roc_auc"]:.3f} (logistic baseline {baseline_auc:.3f}) |
| PR-AUC, churners / those who stay | {test["pr_auc"]:.3f} / {test["pr_auc_retained"]:.3f} |
| precision / recall / F1 at {metrics["threshold"]:.3f} (tuned) | {_prf(tuned)} |
| F1 of calling everyone churned | {test["everyone_churns_f1"]:.3f} |
| called churners / stayers recognised | {test["predicted_churn_share"]:.1%} / {test["retained_recall"]:.1%} |
| precision / recall / F1 at 0.5 | {_prf(half)} |
| Brier score | {test["brier"]:.3f} |
| expected calibration error | {test["calibration_error"]:.3f} |
| confusion matrix | tn {tn}, fp {fp}, fn {fn}, tp {tp} |

The threshold ({metrics["threshold"]:.4f}) maximizes F1 on out-of-fold predictions of the training part
(validation F1 {tuning["validation_f1"]:.3f}); the test set played no part in choosing it.
{notes_text}
![confusion matrix]({PLOTS["confusion_matrix"]}) ![ROC]({PLOTS["roc"]})
![precision-recall]({PLOTS["precision_recall"]}) ![calibration]({PLOTS["calibration"]})
![feature importance]({PLOTS["feature_importance"]}) ![SHAP summary]({PLOTS["shap_summary"]})
![reference histograms]({PLOTS["reference_histograms"]})

## Limits
Trained on behaviour up to the cutoff only; users with no event before it are not scored. {limits}
"""
