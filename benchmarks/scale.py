"""Time and peak memory of the simulator and the feature SQL at scale (default: 1,000,000 users x 90 days).

    python -m benchmarks scale --users 1000000 --out data/scale

Each stage runs in a fresh interpreter, which reports its own wall time and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

_STAGE = """
import json, resource, sys, time
from pathlib import Path
started = time.perf_counter()
stage, events, extra = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
if stage == "simulate":
    from train.simulate import SimulationConfig, simulate_events
    n = simulate_events(SimulationConfig(users=extra["users"], days=extra["days"], seed=7), events)
    result = {"events": n}
else:
    from common.events import EventColumns, open_event_log
    from common.features import build_features, feature_set
    from train.labels import default_cutoff, make_labels
    sessionize = stage == "features-sessionized"
    con = open_event_log(events, EventColumns(session=None if sessionize else "session_id", revenue="revenue"))
    cutoff = default_cutoff(con, 30)
    table = build_features(con, cutoff, sessionize, feature_set("behaviour"))
    labels = make_labels(con, table["user_id"], cutoff, 30)
    result = {"users": len(table), "churn_rate": float(labels.mean())}
result["seconds"] = round(time.perf_counter() - started, 1)
result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT " + json.dumps(result))
"""


def run_stage(stage: str, events: Path, extra: dict[str, int]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _STAGE, stage, str(events), json.dumps(extra)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = out[out.rindex("RESULT ") :].splitlines()[0]  # DuckDB's progress bar may share the line
    result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    return result


def add_parser(commands: Any) -> None:
    """``python -m benchmarks scale``."""
    parser = commands.add_parser(
        "scale",
        help="time and peak memory of simulating and featurizing a large log",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument("--sessionize", action="store_true", help="also time the 30-minute-gap sessionization")
    parser.set_defaults(handler=main)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """The large log's flags, shared by the benchmarks that use it (``simulated_log`` reads them)."""
    parser.add_argument("--users", type=int, default=1_000_000, help="number of simulated users")
    parser.add_argument("--days", type=int, default=90, help="length of the simulated log in days")
    parser.add_argument("--out", type=Path, default=Path("data/scale"), help="folder for the log and the figures")
    parser.add_argument("--reuse", action="store_true", help="reuse an event log simulated by an earlier run")


def simulated_log(args: argparse.Namespace, results: dict[str, Any]) -> Path:
    """The large log of ``--users`` x ``--days``: simulated (and timed into ``results``), or reused with ``--reuse``."""
    events: Path = args.out / f"events-{args.users}.parquet"
    if args.reuse and events.is_file():
        print(f"reusing {events}", flush=True)
    else:
        results["simulate"] = run_stage("simulate", events, {"users": args.users, "days": args.days})
        print(f"simulate: {results['simulate']}", flush=True)
    return events


def main(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {}
    events = simulated_log(args, results)
    stages = ["features", "features-sessionized"] if args.sessionize else ["features"]
    for stage in stages:
        results[stage] = run_stage(stage, events, {})
        print(f"{stage}: {results[stage]}", flush=True)
    results["file_mb"] = round(events.stat().st_size / 2**20)
    (args.out / f"scale-{args.users}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))
    return 0
