"""``python -m benchmarks run | decode | door | reliability | hostile | grpc-hostile | chaos | overload | safety |
tracing | scale | batch | explain | estimate | models | ablation``: speed side by side, what each batch shape costs
before HTTP, what the fast door's Python costs per request, robustness, hostile clients (HTTP and gRPC), operations
under faults, overload shedding, the cost of keys/shedding/TLS, the cost of tracing, scale, batch scoring on DuckDB
and Spark, reasons from the model file, performance estimated before labels, the model against the classic
baselines, and what each feature earns."""

from __future__ import annotations

import argparse
import sys

from benchmarks import (
    ablation,
    batch,
    chaos,
    decode,
    door,
    estimate,
    explain,
    grpc_hostile,
    hostile,
    models,
    overload,
    reliability,
    run,
    safety,
    scale,
    tracing,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (
        run,
        decode,
        door,
        reliability,
        hostile,
        grpc_hostile,
        chaos,
        overload,
        safety,
        tracing,
        scale,
        batch,
        explain,
        estimate,
        models,
        ablation,
    ):
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
