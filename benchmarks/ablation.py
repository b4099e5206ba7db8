"""``python -m benchmarks ablation``: does each feature earn its place? Cross-validated ROC-AUC of a fixed forest
on the training part of one log, adding the catalogue's features one at a time in a declared order.

The rule (DESIGN, issue 12): a feature joins a feature set only if adding it raises cross-validated ROC-AUC by at
least 0.002 on the simulator and on a real public log.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score

from benchmarks.models import TEST_SIZE, add_log_arguments, load_labelled, resolve_events, write_report
from common.events import EventColumns
from common.features import CATALOGUE, FEATURE_SETS, SEED
from train.fit import split_data

MIN_GAIN = 0.002
FOLDS = 5
FOREST = {"n_estimators": 200, "max_depth": 8, "min_samples_leaf": 20}


def steps() -> list[tuple[str, list[str]]]:
    """seed; + each of behaviour's additions in order; then behaviour + each other catalogue feature alone
    (tenure, ``days_since_first_event``, first: the issue's measurements proposed it beside recency)."""
    behaviour = list(FEATURE_SETS["behaviour"])
    out = [("seed", list(SEED))]
    for i, name in enumerate(behaviour[len(SEED) :], start=len(SEED) + 1):
        out.append((f"+ {name}", behaviour[:i]))
    for feature in sorted(CATALOGUE, key=lambda f: f.name != "days_since_first_event"):
        if feature.name not in behaviour and feature.name not in SEED:
            out.append((f"behaviour + {feature.name}", [*behaviour, feature.name]))
    return out


def ablate(events: Path, columns: EventColumns, cutoff: datetime | None, label_days: int, seed: int) -> dict[str, Any]:
    log = load_labelled(events, columns, cutoff, label_days)
    table = log.table
    split = split_data(table.drop(columns=["churned"]), table["churned"], TEST_SIZE, seed)  # the test part stays unseen
    cv = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    rows = []
    behaviour_auc: float | None = None
    previous: float | None = None
    for label, features in steps():
        forest = RandomForestClassifier(**FOREST, random_state=seed, n_jobs=-1)
        auc = float(np.mean(cross_val_score(forest, split.X_train[features], split.y_train, cv=cv, scoring="roc_auc")))
        reference = behaviour_auc if label.startswith("behaviour +") else previous
        rows.append(
            {
                "step": label,
                "features": features,
                "cv_roc_auc": auc,
                "gain": None if reference is None else auc - reference,
            }
        )
        if not label.startswith("behaviour +"):
            previous = auc
            behaviour_auc = auc
    return {
        "n_users": len(table),
        "cutoff": log.cutoff.isoformat(),
        "label_days": label_days,
        "folds": FOLDS,
        "forest": FOREST,
        "min_gain": MIN_GAIN,
        "rows": rows,
    }


def render_markdown(result: dict[str, Any], title: str) -> str:
    lines = [
        f"### {title}: {result['n_users']:,} users, cutoff {result['cutoff'][:10]}, label window "
        f"{result['label_days']} days ({result['folds']}-fold CV on the training part)",
        "",
        "| step | CV ROC-AUC | gain | earns its place (≥ 0.002) |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        gain = "—" if row["gain"] is None else f"{row['gain']:+.4f}"
        earns = "—" if row["gain"] is None else ("yes" if row["gain"] >= result["min_gain"] else "no")
        lines.append(f"| {row['step']} | {row['cv_roc_auc']:.4f} | {gain} | {earns} |")
    return "\n".join(lines) + "\n"


def add_parser(commands: Any) -> None:
    """``python -m benchmarks ablation``."""
    parser = commands.add_parser(
        "ablation",
        help="cross-validated gain of each feature on one log",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/ablation"), help="folder for ablation.md and .json"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    events = resolve_events(args.events)
    columns = EventColumns("user_id", "event_time", args.session_col, args.revenue_col)
    result = ablate(events, columns, args.cutoff, args.label_days, args.seed)
    title = "CDNOW" if args.events == "cdnow" else events.name
    write_report(args.out, "ablation", result, render_markdown(result, title))
    return 0
