"""Batch scoring at scale: every user of a large simulated log, features + scores + write, on DuckDB and on Spark.

    python -m benchmarks batch --users 1000000 [--reuse] [--engines duckdb spark]

Each engine runs in a fresh interpreter (Spark: its own JVM, ``local[2]``); wall time is the whole run (model load,
log checks, features, scores, Parquet written), peak memory the largest resident set of the process tree (the JVM
and Spark's Python workers included), sampled every 0.2 s. The DuckDB run also times its scoring step alone
(Arrow batch -> float32 rows -> onnxruntime -> Arrow columns) against onnxruntime called in-process on the same
rows in the same chunks: the scorer's overhead over the model itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.procs import Repeating
from benchmarks.scale import add_log_arguments, simulated_log

_SCORE = """
import json, sys, time
from pathlib import Path
engine, events, model, out, conf, explain = sys.argv[1:7]
# pyarrow imports pandas (when installed) on its first conversion: a one-time 0.3 s that the in-process baseline
# below also pays before its timer starts, so both start with it loaded (the `score` extra alone has no pandas).
import importlib.util
if importlib.util.find_spec("pandas"):
    import pandas
from common.events import EventColumns
columns = EventColumns(session="session_id", revenue="revenue")
started = time.perf_counter()
if engine == "spark":
    from score.spark_engine import score_on_spark
    summary = score_on_spark(events, columns, Path(model), out, master="local[2]", conf=json.loads(conf),
                             explain=int(explain))
else:
    from score.duckdb_engine import score_on_duckdb
    summary = score_on_duckdb(Path(events), columns, Path(model), Path(out), explain=int(explain))
result = {"users": summary.users, "seconds": round(time.perf_counter() - started, 1),
          "stages": {k: round(v, 2) for k, v in summary.seconds.items()}}
print("RESULT " + json.dumps(result))
"""

# onnxruntime alone on the rows the DuckDB run wrote, in the scorer's chunks, with the scorer's session.
_ORT_ALONE = """
import json, sys, time
import numpy as np, pyarrow.parquet as pq
from pathlib import Path
from score.duckdb_engine import CHUNK_ROWS
from score.model import load_for_scoring
model, spec, _ = load_for_scoring(Path(sys.argv[2]))
X = np.column_stack([pq.read_table(sys.argv[1], columns=[n]).column(0).to_numpy() for n in spec.names])
X = X.astype(np.float32)
started = time.perf_counter()
for start in range(0, len(X), CHUNK_ROWS):
    model.churn_probability(X[start:start + CHUNK_ROWS])
print("RESULT " + json.dumps({"rows": len(X), "seconds": time.perf_counter() - started}))
"""


class PeakMemory(Repeating):
    """The largest summed resident memory of a process and all its descendants, sampled while the block runs."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(every)
        self.root = psutil.Process(pid)
        self.peak_bytes = 0

    def once(self) -> None:
        total = 0
        try:
            for process in [self.root, *self.root.children(recursive=True)]:
                total += process.memory_info().rss
        except psutil.Error:
            pass  # a process ended between listing and sampling
        self.peak_bytes = max(self.peak_bytes, total)


def _run_script(script: str, *args: str) -> tuple[dict[str, Any], float]:
    """Run ``script`` in a fresh interpreter; its RESULT line and the peak memory of its process tree in MB."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    with PeakMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} run failed (exit {process.returncode}): {stderr[-2000:]}")
    line = stdout[stdout.rindex("RESULT ") :].splitlines()[0]
    return json.loads(line.removeprefix("RESULT ")), round(memory.peak_bytes / 2**20)


def score_engine(
    engine: str, events: Path, model: Path, out: Path, spark_memory: str, explain: int = 0
) -> dict[str, Any]:
    conf = {"spark.driver.memory": spark_memory, "spark.sql.shuffle.partitions": "8"}
    arguments = (engine, str(events), str(model), str(out), json.dumps(conf), str(explain))
    result, peak_mb = _run_script(_SCORE, *arguments)
    result["peak_rss_mb"] = peak_mb
    result["users_per_second"] = round(result["users"] / result["seconds"])
    return result


def add_parser(commands: Any) -> None:
    """``python -m benchmarks batch``."""
    parser = commands.add_parser(
        "batch",
        help="score every user of a large log on DuckDB and on Spark local[2]: time, rate, peak memory",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument("--model", type=Path, default=Path("artifacts/model.onnx"), help="the model to score with")
    parser.add_argument(
        "--engines", nargs="+", choices=("duckdb", "spark"), default=["duckdb", "spark"], help="engines to run"
    )
    parser.add_argument("--spark-memory", default="6g", help="spark.driver.memory of the local[2] run")
    parser.add_argument(
        "--explain", type=int, default=0, metavar="K", help="also run DuckDB with --explain K: the cost of the reasons"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {"users_simulated": args.users, "days": args.days, "machine_cores": psutil.cpu_count()}
    events = simulated_log(args, results)
    for engine in args.engines:
        out = args.out / (f"predictions-{args.users}.parquet" if engine == "duckdb" else f"predictions-{args.users}")
        results[engine] = score_engine(engine, events, args.model, out, args.spark_memory)
        print(f"{engine}: {results[engine]}", flush=True)
        if engine == "duckdb":
            alone, _ = _run_script(_ORT_ALONE, str(out), str(args.model))
            scoring = results["duckdb"]["stages"]["score"]
            results["scoring_step"] = {
                "scorer_rows_per_second": round(results["duckdb"]["users"] / scoring),
                "onnxruntime_rows_per_second": round(alone["rows"] / alone["seconds"]),
                "ratio": round(alone["seconds"] / scoring, 2),
            }
            print(f"scoring step: {results['scoring_step']}", flush=True)
            if args.explain:
                explained = args.out / f"predictions-{args.users}-explain-{args.explain}.parquet"
                results["duckdb_explain"] = score_engine(
                    "duckdb", events, args.model, explained, args.spark_memory, args.explain
                )
                results["duckdb_explain"]["time_ratio"] = round(
                    results["duckdb_explain"]["seconds"] / results["duckdb"]["seconds"], 2
                )
                print(f"duckdb --explain {args.explain}: {results['duckdb_explain']}", flush=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"batch-{args.users}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0
