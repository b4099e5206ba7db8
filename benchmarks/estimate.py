"""Performance estimated before labels (CBPE) against what the labels later realize, on simulated periods.

    python -m benchmarks estimate [--model artifacts/model.onnx] [--users 5000] [--out benchmarks/results]

Each period is a fresh simulated log: scored at a cutoff 30 days before its end by ``score run`` (which writes the
estimate), then labelled from the same log's last 30 days by ``score outcomes``. Periods: unshifted (another seed),
two covariate shifts (every user's engagement moved; the way behaviour leads to churn unchanged), and a concept
shift (half the users take a break and come back), which no estimate from scores alone can see.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from common.events import EventColumns
from score.duckdb_engine import score_on_duckdb
from score.outcomes import report_outcomes
from train.simulate import SimulationConfig, simulate_events

LABEL_DAYS = 30
PERIODS: dict[str, dict[str, float]] = {  # name: simulator settings
    "unshifted": {},
    "covariate: less engaged (-0.5)": {"engagement_shift": -0.5},
    "covariate: more engaged (+0.4)": {"engagement_shift": 0.4},
    "concept: half take a break": {"pause_share": 0.5},
}


def estimate_period(model: Path, folder: Path, users: int, seed: int, **shift: float) -> dict[str, Any]:
    """Simulate, score (with the estimate), label, and return both figures."""
    events = folder / "events.parquet"
    simulate_events(SimulationConfig(users=users, days=90, seed=seed, **shift), events)
    ((last,),) = duckdb.execute("SELECT max(event_time) FROM read_parquet($path)", {"path": str(events)}).fetchall()
    cutoff = last - timedelta(days=LABEL_DAYS)
    predictions = folder / "predictions.parquet"
    summary = score_on_duckdb(events, EventColumns(), model, predictions, cutoff)
    report = report_outcomes(predictions, events, EventColumns(), LABEL_DAYS, 1.0, folder / "outcomes")
    realized, estimated = report.figures["realized"], summary.estimate
    assert estimated is not None
    return {
        "users": report.figures["users"],
        "churn_rate": report.figures["churn_rate"],
        "estimated_roc_auc": estimated["roc_auc"],
        "realized_roc_auc": realized["roc_auc"],
        "error": estimated["roc_auc"] - realized["roc_auc"],
        "estimated_precision": estimated["precision"],
        "realized_precision": realized["precision"],
        "estimated_recall": estimated["recall"],
        "realized_recall": realized["recall"],
        "realized_calibration_error": realized["calibration_error"],
    }


def run(model: Path, users: int, seed: int = 101) -> dict[str, Any]:
    results = {}
    for offset, (name, shift) in enumerate(PERIODS.items()):
        with tempfile.TemporaryDirectory(prefix="pulse-estimate-") as tmp:
            results[name] = estimate_period(model, Path(tmp), users, seed + offset, **shift)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| period | users | churn | estimated ROC-AUC | realized | error | est. precision | realized | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['users']} | {r['churn_rate']:.1%} | {r['estimated_roc_auc']:.3f} | "
            f"{r['realized_roc_auc']:.3f} | {r['error']:+.3f} | {r['estimated_precision']:.3f} | "
            f"{r['realized_precision']:.3f} | {r['realized_calibration_error']:.3f} |"
        )
    return "\n".join(lines)


def add_parser(commands: Any) -> None:
    """``python -m benchmarks estimate``."""
    parser = commands.add_parser(
        "estimate",
        help="performance estimated before labels (CBPE) against the realized, on shifted and unshifted periods",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=Path("artifacts/model.onnx"), help="the exported model")
    parser.add_argument("--users", type=int, default=5000, help="users per simulated period")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for estimate.json")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    results = run(args.model, args.users)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "estimate.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0
