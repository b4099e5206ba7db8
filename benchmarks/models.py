"""``python -m benchmarks models``: the served forest against the classic baselines, on the same users, cutoff and
test split: logistic regression, histogram gradient boosting and BG/NBD (Fader, Hardie & Lee 2005).

Every model is fitted on the training part only; the test part is scored once. Differences to the served model
come with paired bootstrap 95% intervals over the test users.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from benchmarks.datasets import cdnow_event_log
from common.events import EventColumns, open_event_log, timestamps_are_dates
from common.features import CATALOGUE, DEFAULT_FEATURE_SET, FEATURE_SETS, build_features
from train import evaluate
from train.bgnbd import BgNbd, summary_from_features
from train.config import TrainConfig
from train.fit import PARAM_GRID, fit_baseline, fit_forest, split_data
from train.labels import check_label_window, default_cutoff, make_labels

logger = logging.getLogger(__name__)

SMALL_GRID = {"n_estimators": [30], "max_depth": [6], "min_samples_leaf": [20]}
BOOTSTRAP = 1000
# The training run's own choices, so the served forest here is the one `train fit` would serve.
_TRAINING = TrainConfig(events=Path("events.parquet"))
TEST_SIZE, CV_FOLDS, AUC_TOLERANCE = _TRAINING.test_size, _TRAINING.cv_folds, _TRAINING.auc_tolerance
SERVED = f"forest · {DEFAULT_FEATURE_SET} (served)"


@dataclass(frozen=True, slots=True)
class LabelledLog:
    table: pd.DataFrame  # user_id, every catalogue feature, churned
    cutoff: datetime
    label_days: int
    dates_only: bool


def load_labelled(events: Path, columns: EventColumns, cutoff: datetime | None, label_days: int) -> LabelledLog:
    """Every catalogue feature and the churn label of each user active at or before the cutoff."""
    con = open_event_log(events, columns)
    cutoff = cutoff or default_cutoff(con, label_days)
    check_label_window(con, cutoff, label_days)
    table = build_features(con, cutoff, columns.session is None, CATALOGUE)
    table["churned"] = make_labels(con, table["user_id"], cutoff, label_days)
    dates_only = timestamps_are_dates(con)
    con.close()
    return LabelledLog(table, cutoff, label_days, dates_only)


def _scores(log: LabelledLog, seed: int, grid: dict[str, list[Any]]) -> tuple[dict[str, Any], pd.Series]:
    """Each model's P(churn) on the test users, and the test labels."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    table = log.table
    y = table["churned"]
    split = split_data(table.drop(columns=["churned"]), y, TEST_SIZE, seed)
    train_rows, test_rows = split.X_train, split.X_test
    scores: dict[str, Any] = {}
    nodes: dict[str, int] = {}
    for name, features in FEATURE_SETS.items():
        forest = fit_forest(train_rows[list(features)], split.y_train, CV_FOLDS, AUC_TOLERANCE, seed, grid)
        label = SERVED if name == DEFAULT_FEATURE_SET else f"forest · {name}"
        scores[label] = forest.model.predict_proba(test_rows[list(features)])[:, 1]
        nodes[label] = forest.node_count
    for name, features in FEATURE_SETS.items():
        logistic = fit_baseline(train_rows[list(features)], split.y_train, seed)
        scores[f"logistic regression · {name}"] = logistic.predict_proba(test_rows[list(features)])[:, 1]
    richest = list(FEATURE_SETS[DEFAULT_FEATURE_SET])
    boosting = HistGradientBoostingClassifier(random_state=seed).fit(train_rows[richest], split.y_train)
    scores[f"gradient boosting · {DEFAULT_FEATURE_SET}"] = boosting.predict_proba(test_rows[richest])[:, 1]

    def summary(rows: pd.DataFrame) -> tuple[npt.NDArray[np.float64], ...]:
        return summary_from_features(rows["active_days"], rows["days_since_first_event"], rows["days_since_last_event"])

    bgnbd = BgNbd().fit(*summary(train_rows))
    scores["BG/NBD"] = bgnbd.probability_no_transaction(log.label_days / 7.0, *summary(test_rows))
    return {"scores": scores, "nodes": nodes, "bgnbd_params": bgnbd.params_}, split.y_test


def _metrics(y: npt.NDArray[np.bool_], p: npt.NDArray[np.float64]) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "pr_auc_retained": float(average_precision_score(~y, 1 - p)),
        "brier": float(brier_score_loss(y, p)),
        "calibration_error": evaluate.expected_calibration_error(y, p),
    }


def _bootstrap_differences(
    y: npt.NDArray[np.bool_], scores: dict[str, npt.NDArray[np.float64]], seed: int
) -> dict[str, dict[str, list[float]]]:
    """Paired bootstrap over test users: 95% interval of (model - served) for ROC-AUC and Brier score."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    served = scores[SERVED]
    draws: dict[str, dict[str, list[float]]] = {name: {"roc_auc": [], "brier": []} for name in scores if name != SERVED}
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        if yb.all() or not yb.any():
            continue
        served_auc = float(roc_auc_score(yb, served[idx]))
        served_brier = float(np.mean((served[idx] - yb) ** 2))
        for name in draws:
            draws[name]["roc_auc"].append(float(roc_auc_score(yb, scores[name][idx])) - served_auc)
            draws[name]["brier"].append(float(np.mean((scores[name][idx] - yb) ** 2)) - served_brier)
    return {
        name: {metric: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for metric, v in d.items()}
        for name, d in draws.items()
    }


def compare(log: LabelledLog, seed: int, grid: dict[str, list[Any]]) -> dict[str, Any]:
    fitted, y_test = _scores(log, seed, grid)
    y = y_test.to_numpy(bool)
    scores = {name: np.asarray(p, dtype=np.float64) for name, p in fitted["scores"].items()}
    intervals = _bootstrap_differences(y, scores, seed)
    models = {}
    for name, p in scores.items():
        entry: dict[str, Any] = _metrics(y, p)
        if name in fitted["nodes"]:
            entry["node_count"] = fitted["nodes"][name]
        if name != SERVED:
            served = _metrics(y, scores[SERVED])
            entry["roc_auc_minus_served"] = entry["roc_auc"] - served["roc_auc"]
            entry["roc_auc_minus_served_95"] = intervals[name]["roc_auc"]
            entry["brier_minus_served_95"] = intervals[name]["brier"]
        models[name] = entry
    params = fitted["bgnbd_params"]
    return {
        "n_users": len(log.table),
        "n_test": int(len(y)),
        "churn_rate": float(log.table["churned"].mean()),
        "cutoff": log.cutoff.isoformat(),
        "label_days": log.label_days,
        "timestamps_are_dates": log.dates_only,
        "seed": seed,
        "grid": grid,
        "bootstrap_resamples": BOOTSTRAP,
        "bgnbd_params": {"r": params.r, "alpha": params.alpha, "a": params.a, "b": params.b},
        "models": models,
        "_scores": (y, scores),
    }


def render_markdown(result: dict[str, Any], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        f"{result['n_users']:,} users, cutoff {result['cutoff'][:10]}, label window {result['label_days']} days, "
        f"churn rate {result['churn_rate']:.1%}, {result['n_test']:,} test users"
        + (" (timestamps are dates only: sessions equal days)" if result["timestamps_are_dates"] else "")
        + ".",
        "",
        "| model | ROC-AUC | Δ ROC-AUC vs served [95% CI] | PR-AUC churn / stay | Brier | ECE | nodes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in sorted(result["models"].items(), key=lambda item: -item[1]["roc_auc"]):
        delta = (
            f"{m['roc_auc_minus_served']:+.3f} [{m['roc_auc_minus_served_95'][0]:+.3f}, "
            f"{m['roc_auc_minus_served_95'][1]:+.3f}]"
            if "roc_auc_minus_served" in m
            else "—"
        )
        lines.append(
            f"| {name} | {m['roc_auc']:.3f} | {delta} | {m['pr_auc']:.3f} / {m['pr_auc_retained']:.3f} | "
            f"{m['brier']:.3f} | {m['calibration_error']:.3f} | {m.get('node_count', '')} |"
        )
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    y, scores = result["_scores"]
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    for name, p in sorted(scores.items(), key=lambda item: -result["models"][item[0]]["roc_auc"]):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2.2 if name == SERVED else 1.1, label=f"{name} ({result['models'][name]['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC on the test users: {title}")
    ax.legend(loc="lower right", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """Which log, labelled how: the options ``models`` and ``ablation`` share."""
    parser.add_argument(
        "--events", default="cdnow", help="an event log (CSV, Parquet, glob), or 'cdnow' for the CDNOW purchase log"
    )
    parser.add_argument("--label-days", type=int, default=90, help="label window in days")
    parser.add_argument("--cutoff", type=datetime.fromisoformat, default=None, help="absent: last event minus window")
    parser.add_argument("--session-col", default=None, help="absent: sessions split at 30-minute gaps")
    parser.add_argument("--revenue-col", default="revenue", help="column holding revenue per event")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the split, the models, folds and bootstrap")


def add_parser(commands: Any) -> None:
    """``python -m benchmarks models``."""
    parser = commands.add_parser(
        "models",
        help="the served forest vs logistic regression, gradient boosting and BG/NBD on one log",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument(
        "--grid",
        choices=["full", "small"],
        default="full",
        help="the forests' size search: the training grid or one point",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/models"), help="folder for models.md, .json and .png"
    )
    parser.set_defaults(handler=main)


def resolve_events(events: str) -> Path:
    return cdnow_event_log(Path("data/cdnow/events.parquet")) if events == "cdnow" else Path(events)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    events = resolve_events(args.events)
    columns = EventColumns("user_id", "event_time", args.session_col, args.revenue_col)
    log = load_labelled(events, columns, args.cutoff, args.label_days)
    result = compare(log, args.seed, SMALL_GRID if args.grid == "small" else PARAM_GRID)
    title = "CDNOW" if args.events == "cdnow" else events.name
    args.out.mkdir(parents=True, exist_ok=True)
    _plot(result, title, args.out / "models.png")
    result.pop("_scores")
    write_report(args.out, "models", result, render_markdown(result, title))
    return 0


def write_report(out: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    """``<name>.json`` and ``<name>.md`` into ``out``, and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
