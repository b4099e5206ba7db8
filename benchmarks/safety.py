"""``python -m benchmarks safety``: what each safe-operation part costs single-row ``/predict`` when on.

One server per condition (all off; API keys; ``PULSE_MAX_IN_FLIGHT`` not reached; TLS) plus the bare Starlette
route, each alone on core 0, wrk on core 1, interleaved rounds; medians. The keys file and a self-signed
certificate are made in a temporary folder (``openssl`` on the PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.procs import free_port, python_command, self_signed_certificate, stop
from benchmarks.run import SERVER_CORE, _taskset, run_wrk
from server.config.keys import hash_key

KEY = "pk_benchmark"
JSON = {"Content-Type": "application/json"}


def _conditions(folder: Path) -> dict[str, tuple[dict[str, str] | None, str, dict[str, str]]]:
    """Name -> (server environment, or None for the bare Starlette route; scheme; request headers)."""
    (folder / "keys").write_text(f"{hash_key(KEY)} predict benchmark\n")
    cert, key = self_signed_certificate(folder)
    return {
        "all off": ({}, "http", JSON),
        "API keys on": (
            {"PULSE_API_KEYS_FILE": str(folder / "keys")},
            "http",
            {**JSON, "Authorization": f"Bearer {KEY}"},
        ),
        "PULSE_MAX_IN_FLIGHT=64": ({"PULSE_MAX_IN_FLIGHT": "64"}, "http", JSON),
        "TLS on": (
            {"PULSE_TLS_CERT": str(cert), "PULSE_TLS_KEY": str(key)},
            "https",
            JSON,
        ),
        "bare Starlette route": (None, "http", JSON),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    features = json.loads((args.artifacts / "metrics.json").read_text())["features"]
    row = json.dumps(dict.fromkeys(features, 3.0)).encode()
    folder = Path(tempfile.mkdtemp(prefix="pulse-safety-"))
    conditions = _conditions(folder)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in conditions}
    with ExitStack() as stack:
        urls = {}
        for name, (env, scheme, _) in conditions.items():
            port = free_port()
            module = (
                ["-m", "benchmarks.reference.bare_starlette"]
                if env is None
                else ["-m", "server", "--model", str(args.artifacts / "model.onnx"), "--log-level", "warning"]
            )
            process = subprocess.Popen(
                [*_taskset(SERVER_CORE), *python_command(*module, "--port", str(port))],
                env={**os.environ, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(stop, process)
            urls[name] = f"{scheme}://127.0.0.1:{port}"
        time.sleep(8)  # every server loaded (wrk's warm-up below would fail on one that is not)
        for round_index in range(args.rounds):
            for name, (_, _, headers) in conditions.items():
                run_wrk(urls[name], "/predict", [row], args.warmup, folder, headers)
                stats = run_wrk(urls[name], "/predict", [row], args.seconds, folder, headers)
                if stats["errors"] or stats["non_2xx"]:
                    raise SystemExit(f"{name}: {stats['errors']} errors, {stats['non_2xx']} non-2xx answers")
                samples[name].append((stats["rps"], stats["p99_us"]))
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    off = statistics.median(rps for rps, _ in samples["all off"])
    results = {}
    for name, runs in samples.items():
        rps = statistics.median(r for r, _ in runs)
        results[name] = {"rps": rps, "p99_ms": statistics.median(p for _, p in runs) / 1000, "vs_off": rps / off}
        print(
            f"{name:24s} {rps:9,.0f} req/s  p99 {results[name]['p99_ms']:.2f} ms  {rps / off:.2f}x all off", flush=True
        )
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks safety``."""
    parser = commands.add_parser(
        "safety",
        help="single-row cost of API keys, overload shedding and TLS, each on vs all off",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up before each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are their medians")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/safety.json"), help="JSON figures")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0
