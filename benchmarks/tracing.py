"""What tracing costs: single-row ``/predict`` under wrk with tracing off, on with nothing sampled, at 1% and at
100%, and with the collector unreachable, in interleaved rounds on the same server core, each round in a rotated
order (same run: ratios to tracing off in the same round, never absolute figures).

    python -m benchmarks tracing [--rounds 3] [--seconds 8]

The collector is a sink on the load generator's core that decodes nothing and answers 200 (OTLP/HTTP); the
unreachable one is a closed port. The per-request cost of a sampled and of an unsampled request is the difference
of the mean time per request on the server's one core (1 / requests/s) against tracing off.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.procs import free_port, python_command, run_server
from benchmarks.run import LOAD_CORE, SERVER_CORE, run_wrk
from common.model.loader import load_model


@contextmanager
def sink() -> Iterator[int]:
    """An OTLP/HTTP endpoint that reads each export and answers 200: the collector's cost is not ours."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector offers

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def configurations(sink_port: int) -> dict[str, dict[str, str]]:
    collector = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}", "OTEL_BSP_SCHEDULE_DELAY": "500"}
    unreachable = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "500",
    }
    return {
        "off": {},
        "on, none sampled": {**collector, "OTEL_TRACES_SAMPLER_ARG": "0"},
        "1%": {**collector, "OTEL_TRACES_SAMPLER_ARG": "0.01"},
        "100%": {**collector, "OTEL_TRACES_SAMPLER_ARG": "1"},
        "1%, collector unreachable": {**unreachable, "OTEL_TRACES_SAMPLER_ARG": "0.01"},
        "100%, collector unreachable": {**unreachable, "OTEL_TRACES_SAMPLER_ARG": "1"},
    }


def measure(model: Path, env: dict[str, str], seconds: float, workdir: Path) -> dict[str, float]:
    port = free_port()
    command = python_command("-m", "server", "--model", str(model), "--port", str(port), "--log-level", "warning")
    with run_server(command, port, workdir / "server.log", env=env, cpu=SERVER_CORE) as server:
        body = json.dumps(dict.fromkeys(load_model(model).info.features, 2.0)).encode()  # one row, whatever the model
        run_wrk(server.url, "/predict", [body], 2, workdir)  # warm-up
        return run_wrk(server.url, "/predict", [body], seconds, workdir)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if hasattr(os, "sched_setaffinity"):  # the sink's thread is this process's: keep it off the server's core
        os.sched_setaffinity(0, {LOAD_CORE})
    rounds: dict[str, list[dict[str, float]]] = {}
    with sink() as sink_port, tempfile.TemporaryDirectory(prefix="pulse-tracing-") as folder:
        configured = list(configurations(sink_port).items())
        for round_number in range(args.rounds):
            shift = round_number % len(configured)  # each round starts elsewhere: no configuration always runs last
            for name, env in configured[shift:] + configured[:shift]:
                rounds.setdefault(name, []).append(measure(args.model, env, args.seconds, Path(folder)))
    results: dict[str, Any] = {"rounds": args.rounds, "seconds": args.seconds, "by_configuration": {}}
    off = [run["rps"] for run in rounds["off"]]
    for name, runs in rounds.items():
        rps = [run["rps"] for run in runs]
        ratios = [mine / theirs for mine, theirs in zip(rps, off, strict=True)]  # same round: a ratio
        results["by_configuration"][name] = {
            "rps": rps,
            "ratio_to_off": [round(r, 3) for r in ratios],
            "p50_us": [run["p50_us"] for run in runs],
            "p99_us": [run["p99_us"] for run in runs],
        }

    def cost(name: str) -> float:
        return statistics.median(1e6 / a - 1e6 / b for a, b in zip(
            results["by_configuration"][name]["rps"], off, strict=True))  # fmt: skip

    results["per_request_us"] = {"unsampled": round(cost("on, none sampled"), 2), "sampled": round(cost("100%"), 2)}
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks tracing``."""
    parser = commands.add_parser(
        "tracing",
        help="what tracing costs single-row /predict: off, 1%%, 100%%, collector unreachable (same run)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=Path("artifacts/model.onnx"), help="the model every run serves")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every configuration")
    parser.add_argument("--seconds", type=float, default=8.0, help="wrk's duration per run, after a 2 s warm-up")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for tracing.json")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracing.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0
