"""Command line: ``python -m export --artifacts artifacts/``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Convert model.joblib to model.onnx, check parity with scikit-learn, write its sha256.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="the folder `python -m train fit` wrote into"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from export.export import export_model

    try:
        report = export_model(args.artifacts)
    except (ValueError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    test, generated = report["test"], report["generated"]
    print(
        f"exported {args.artifacts / 'model.onnx'} ({report['model_bytes']} bytes, {report['node_count']} nodes): "
        f"max |diff| {max(test['max_abs_diff_onnxruntime'], generated['max_abs_diff_onnxruntime']):.2g} over "
        f"{test['rows'] + generated['rows']} rows, {test['decision_flips'] + generated['decision_flips']} flips"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
