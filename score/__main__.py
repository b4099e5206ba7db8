"""Command line: ``python -m score run | outcomes``.

    python -m score run --events LOG --model model.onnx [--cutoff T] [--engine duckdb|spark] --out predictions.parquet
    python -m score outcomes --predictions predictions.parquet --events LATER_LOG [--label-days N] --out report/
    python -m score outcomes --served 'requests*.jsonl' --events LATER_LOG [--model model.onnx] --out report/

Exit codes: 0 done; 1 (outcomes) the realized ROC-AUC fell more than ``--tolerance`` below the test ROC-AUC;
2 bad input (one line naming the column, value or file), with nothing written.
"""

from __future__ import annotations

import argparse
import logging.config
import sys
from pathlib import Path

from common.events import add_column_flags, columns_from_flags, iso_timestamp
from common.logconfig import CLI_LOGGING_CONFIG

DEFAULT_TOLERANCE = 0.05


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--spark-conf {text!r} is not KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m score", description=__doc__, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="build every user's features from a log and score them with the model", formatter_class=formatter
    )
    run.add_argument("--events", required=True, help="event log: CSV, Parquet or a glob (Spark: any path it reads)")
    run.add_argument("--model", type=Path, default=Path("artifacts/model.onnx"), help="the exported model.onnx")
    run.add_argument(
        "--cutoff", type=iso_timestamp, default=None, help="score users active at or before this; absent: last event"
    )
    run.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb", help="where the features are built")
    run.add_argument(
        "--master", default=None, help="Spark master (local[2], spark://host:7077, yarn); absent: spark-submit's"
    )
    run.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting, repeatable (spark.driver.memory=4g); spark-submit's --conf does the same",
    )
    run.add_argument(
        "--out",
        default="artifacts/predictions.parquet",
        help="a Parquet file (duckdb) or a folder of Parquet part files (spark)",
    )
    run.add_argument(
        "--explain",
        type=int,
        default=0,
        metavar="K",
        help="add each user's K strongest reasons (feature, value, SHAP contribution), computed by model.onnx",
    )
    add_column_flags(run)

    outcomes = commands.add_parser(
        "outcomes",
        help="label the scored users from a later log and report how good the scores were",
        formatter_class=formatter,
    )
    what = outcomes.add_mutually_exclusive_group(required=True)
    what.add_argument("--predictions", type=Path, help="what `score run` wrote (file or folder)")
    what.add_argument(
        "--served",
        metavar="REQUEST_LOG",
        help="the server's request log (a file or a glob over its rotated files): answers given with an id",
    )
    outcomes.add_argument(
        "--as-of",
        type=iso_timestamp,
        default=None,
        help="with --served: take every answer as given at this time (a replayed period); absent: each answer's ts",
    )
    outcomes.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        help="with --served: a model.onnx whose test figures judge its version's answers (repeatable)",
    )
    outcomes.add_argument("--events", type=Path, required=True, help="an event log covering the label window")
    outcomes.add_argument(
        "--label-days",
        type=int,
        default=None,
        help="churned = no event this many days after the cutoff; absent: the model's training window",
    )
    outcomes.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="exit 1 when the realized ROC-AUC is this much below the model card's test ROC-AUC",
    )
    outcomes.add_argument("--out", type=Path, default=Path("artifacts/outcomes"), help="folder for JSON, Markdown, PNG")
    add_column_flags(outcomes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.config.dictConfig(CLI_LOGGING_CONFIG)
    import duckdb

    from score.model import ScoreError

    try:
        columns = columns_from_flags(args)
        if args.command == "run":
            if args.engine == "spark":
                from score.spark_engine import score_on_spark

                conf = dict(_key_value(item) for item in args.spark_conf)
                summary = score_on_spark(
                    args.events,
                    columns,
                    args.model,
                    args.out,
                    args.cutoff,
                    args.master,
                    conf=conf,
                    explain=args.explain,
                )
            else:
                from score.duckdb_engine import score_on_duckdb

                summary = score_on_duckdb(
                    Path(args.events), columns, args.model, Path(args.out), args.cutoff, explain=args.explain
                )
            print(summary.line())
            return 0
        if args.served is not None:
            from score.model import load_for_scoring
            from score.served import report_served_outcomes

            cards = {spec.version: spec.test_metrics for spec in (load_for_scoring(m)[1] for m in args.model)}
            served = report_served_outcomes(
                args.served, args.events, columns, args.label_days, args.tolerance, args.out, args.as_of, cards
            )
            print(served.line())
            return 1 if served.degraded else 0
        from score.outcomes import report_outcomes

        report = report_outcomes(args.predictions, args.events, columns, args.label_days, args.tolerance, args.out)
        print(report.line())
        return 1 if report.degraded else 0
    except (ScoreError, ValueError, OSError, RuntimeError, duckdb.Error) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
