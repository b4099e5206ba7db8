"""Command line: ``python -m train simulate | fit | drift``."""

from __future__ import annotations

import argparse
import logging
import logging.config
import sys
from pathlib import Path

from common.events import add_column_flags, iso_timestamp
from common.features import DEFAULT_FEATURE_SET, FEATURE_SETS
from common.logconfig import CLI_LOGGING_CONFIG

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("simulate", help="write a simulated product event log", formatter_class=formatter)
    sim.add_argument("--users", type=int, default=5000, help="number of users")
    sim.add_argument("--days", type=int, default=90, help="length of the log in days")
    sim.add_argument("--seed", type=int, default=7, help="random seed (same seed, same log)")
    sim.add_argument(
        "--sessions-scale",
        type=float,
        default=1.0,
        help="multiplier on sessions per active day (below 1: a population that drifted)",
    )
    sim.add_argument(
        "--revenue-scale",
        type=float,
        default=1.0,
        help="multiplier on every purchase's revenue (not 1: prices or currency changed, drift in one feature)",
    )
    sim.add_argument(
        "--pause-share",
        type=float,
        default=0.0,
        help="share (0-1) of users who take one 3-9 week break and come back: a churn pattern a model trained "
        "without breaks has not seen",
    )
    sim.add_argument(
        "--engagement-shift",
        type=float,
        default=0.0,
        help="moves every user's engagement on a log scale (below 0: a less engaged population): a covariate "
        "shift, in which the features move and the way behaviour leads to churn does not",
    )
    sim.add_argument("--out", type=Path, default=Path("data/events.parquet"), help="Parquet, or CSV by its suffix")

    fit = commands.add_parser(
        "fit", help="build features and labels, train, evaluate, write artifacts", formatter_class=formatter
    )
    fit.add_argument(
        "--events", type=Path, default=Path("data/events.parquet"), help="event log: CSV, Parquet or a glob"
    )
    fit.add_argument(
        "--out", type=Path, default=Path("artifacts"), help="folder for features, model, metrics (and the report)"
    )
    fit.add_argument(
        "--assets", type=Path, default=None, help="folder for the plots and model card; absent: <out>/report"
    )
    add_column_flags(fit)
    fit.add_argument(
        "--cutoff",
        type=iso_timestamp,
        default=None,
        help="ISO timestamp ending the observation window; absent: last event minus --label-days",
    )
    fit.add_argument("--label-days", type=int, default=30, help="label window in days: churned = no event in it")
    fit.add_argument("--seed", type=int, default=7, help="random seed of the split, the forests and SHAP sampling")
    fit.add_argument(
        "--feature-set",
        choices=sorted(FEATURE_SETS),
        default=DEFAULT_FEATURE_SET,
        help="which features the model takes: 'seed' (the five activity counts of the first version) or "
        "'behaviour' (those plus recency and tenure, the default: it beats the classic baselines)",
    )

    feats = commands.add_parser(
        "features", help="write the per-user features of an event log (no labels)", formatter_class=formatter
    )
    feats.add_argument("--events", type=Path, required=True, help="event log: CSV, Parquet or a glob")
    feats.add_argument("--out", type=Path, required=True, help="a .parquet or .csv file")
    add_column_flags(feats)
    feats.add_argument("--cutoff", type=iso_timestamp, default=None, help="ISO timestamp; absent: the last event")
    feats.add_argument(
        "--feature-set", choices=sorted(FEATURE_SETS), default=DEFAULT_FEATURE_SET, help="which features to write"
    )

    drift = commands.add_parser(
        "drift", help="Evidently data drift: training features vs production requests", formatter_class=formatter
    )
    drift.add_argument(
        "--reference", type=Path, default=Path("artifacts"), help="the training artifacts folder (features.parquet)"
    )
    drift.add_argument("--current", type=Path, required=True, help="the server's JSONL request log, CSV or Parquet")
    drift.add_argument("--out", type=Path, default=Path("artifacts/drift"), help="folder for the HTML/JSON report")
    drift.add_argument(
        "--drift-share",
        type=float,
        default=0.0,
        help="report drift (exit 1) only when at least this share (0-1) of features drifted; "
        "0: any drifted feature, or drifted predictions",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from common.events import columns_from_flags

    logging.config.dictConfig(CLI_LOGGING_CONFIG)
    try:
        if args.command == "simulate":
            from train.simulate import SimulationConfig, simulate_events

            config = SimulationConfig(
                args.users,
                args.days,
                args.seed,
                args.sessions_scale,
                args.revenue_scale,
                args.pause_share,
                args.engagement_shift,
            )
            n_events = simulate_events(config, args.out)
            print(f"simulated {n_events} events of {args.users} users over {args.days} days -> {args.out}")
        elif args.command == "fit":
            from train.config import TrainConfig
            from train.pipeline import run_training

            metrics = run_training(
                TrainConfig(
                    events=args.events,
                    out=args.out,
                    assets=args.assets,
                    user_col=args.user_col,
                    time_col=args.time_col,
                    session_col=args.session_col,
                    revenue_col=args.revenue_col,
                    cutoff=args.cutoff,
                    label_days=args.label_days,
                    seed=args.seed,
                    feature_set=args.feature_set,
                )
            )
            test = metrics["test"]
            if metrics["timestamps_are_dates"]:
                print("note: the log's timestamps are dates only: sessions equal calendar days")
            if metrics["threshold_tuning"]["near_degenerate"]:
                print(
                    f"note: near-degenerate threshold: {test['predicted_churn_share']:.1%} of test users called "
                    f"churners; F1 {test['f1']:.3f} vs {test['everyone_churns_f1']:.3f} for calling everyone churned"
                )
            print(
                f"trained {metrics['model_version']} on feature set {metrics['feature_set']!r}: "
                f"{metrics['n_users']} users, "
                f"churn rate {metrics['churn_rate']:.1%}, "
                f"test ROC-AUC {test['roc_auc']:.3f} F1 {test['f1']:.3f} at threshold {metrics['threshold']:.3f}, "
                f"{metrics['node_count']} nodes, {metrics['elapsed_seconds']:.0f}s -> {args.out}/"
            )
        elif args.command == "features":
            from train.pipeline import write_features

            n_users = write_features(
                args.events,
                args.out,
                columns_from_flags(args),
                args.cutoff,
                args.feature_set,
            )
            print(f"features of {n_users} users -> {args.out}")
        else:
            from train.drift import run_drift

            return run_drift(args.reference, args.current, args.out, args.drift_share)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
