"""``python -m benchmarks overload``: offered load at 3x capacity, with and without ``PULSE_MAX_IN_FLIGHT``.

For each condition a fresh server (one worker, core 0) is measured three ways: its capacity (wrk, 16 connections,
closed loop, 100-row requests), its unloaded latency (a probe client alone, 50 requests/s), then an open-ish load
at three times that capacity (wrk, many connections each pacing itself with ``delay()``) while the probe client
keeps measuring what an ordinary caller sees: the latency of its accepted requests, its 503s (and whether they
carry ``Retry-After``), timeouts; and the server's RSS throughout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.hostile import rss_mb
from benchmarks.procs import Repeating, ServerProcess, free_port, percentile_ms, python_command, run_server
from benchmarks.run import LOAD_CORE, SERVER_CORE, _taskset, run_wrk

ROWS_PER_REQUEST = 100
PACED_WRK = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb")); wrk.body = f:read("*a"); f:close()
function delay() return {interval_ms} end
"""


class Probe(Repeating):
    """One ordinary client: a request every ``every`` seconds on its own keep-alive connection."""

    def __init__(self, port: int, body: bytes, every: float = 0.02) -> None:
        super().__init__(every)
        self.port, self.body = port, body
        self.accepted: list[float] = []
        self.shed: list[float] = []
        self.shed_with_retry_after = 0
        self.failures = 0
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def once(self) -> None:
        started = time.perf_counter()
        try:
            self._connection.request("POST", "/predict", self.body, {"content-type": "application/json"})
            response = self._connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.failures += 1
            self._connection.close()  # the next request reconnects
            return
        seconds = time.perf_counter() - started
        if response.status == 200:
            self.accepted.append(seconds)
        elif response.status == 503:
            self.shed.append(seconds)
            self.shed_with_retry_after += response.getheader("retry-after") is not None
        else:
            self.failures += 1
        if response.getheader("connection") == "close":
            self._connection.close()

    def finish(self) -> None:
        self._connection.close()

    def summary(self) -> dict[str, Any]:
        return {
            "accepted": len(self.accepted),
            "accepted_p50_ms": percentile_ms(self.accepted, 0.5),
            "accepted_p99_ms": percentile_ms(self.accepted, 0.99),
            "shed": len(self.shed),
            "shed_p99_ms": percentile_ms(self.shed, 0.99),
            "shed_with_retry_after": self.shed_with_retry_after,
            "failures": self.failures,
        }


def _paced_wrk(server: ServerProcess, body_file: Path, rps: float, seconds: float, workdir: Path) -> dict[str, Any]:
    connections = 256
    interval_ms = max(1, round(1000 * connections / rps))
    script = workdir / "paced.lua"
    script.write_text(PACED_WRK.format(body=body_file, interval_ms=interval_ms))
    done = script.with_suffix(".done.lua")
    done.write_text(
        script.read_text()
        + 'done = function(s, l, r) io.write(string.format("JSON {\\"requests\\":%d,\\"timeouts\\":%d,'
        '\\"errors\\":%d,\\"non_2xx\\":%d,\\"duration_us\\":%d}\\n", s.requests, s.errors.timeout, '
        "s.errors.connect + s.errors.read + s.errors.write, s.errors.status, s.duration)) end\n"
    )
    command = [*_taskset(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "5s"]
    out = subprocess.run(
        [*command, "-s", str(done), server.url + "/predict"], capture_output=True, text=True, timeout=seconds + 60
    ).stdout
    stats: dict[str, Any] = json.loads(out[out.index("JSON ") + 5 :].splitlines()[0])
    stats["offered_rps"] = connections * 1000 / interval_ms
    stats["served_rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def measure(
    artifacts: Path, max_in_flight: int, capacity: float | None, seconds: float, workdir: Path, body: bytes
) -> dict[str, Any]:
    """One condition; ``capacity`` (requests/s) is measured here when not given (on the server without a bound:
    with one, its fast 503s would count as capacity)."""
    body_file = workdir / "batch.json"
    body_file.write_bytes(body)
    port = free_port()
    command = python_command(
        "-m", "server", "--model", str(artifacts / "model.onnx"), "--port", str(port), "--log-level", "warning"
    )
    env = {"PULSE_MAX_IN_FLIGHT": str(max_in_flight)}
    with run_server([*_taskset(SERVER_CORE), *command], port, workdir / f"server-{max_in_flight}.log", env) as server:
        if capacity is None:
            capacity = run_wrk(server.url, "/predict", [body], seconds, workdir)["rps"]
        with Probe(port, body) as alone:
            time.sleep(seconds)
        rss = [rss_mb(server.pid)]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                rss.append(rss_mb(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with Probe(port, body) as loaded:
            load = _paced_wrk(server, body_file, 3 * capacity, seconds, workdir)
        stop.set()
        sampler.join()
    return {
        "max_in_flight": max_in_flight,
        "capacity_rps": round(capacity),  # of the server without a bound
        "unloaded": alone.summary(),
        "overload": {**load, "accepted_rps": (load["requests"] - load["non_2xx"]) / (load["duration_us"] / 1e6)}
        | loaded.summary(),
        "rss_mb_start": round(rss[0], 1),
        "rss_mb_peak": round(max(rss), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    features = json.loads((args.artifacts / "metrics.json").read_text())["features"]
    table = pd.read_parquet(args.artifacts / "features.parquet")[features]
    body = table.head(ROWS_PER_REQUEST).to_json(orient="records").encode()
    workdir = Path(tempfile.mkdtemp(prefix="pulse-overload-"))
    conditions: list[dict[str, Any]] = []
    results = {"rows_per_request": ROWS_PER_REQUEST, "conditions": conditions}
    capacity = None
    for max_in_flight in (0, args.max_in_flight):
        outcome = measure(args.artifacts, max_in_flight, capacity, args.seconds, workdir, body)
        capacity = outcome["capacity_rps"]
        conditions.append(outcome)
        label = f"PULSE_MAX_IN_FLIGHT={max_in_flight}" + (" (off)" if max_in_flight == 0 else "")
        o, u = outcome["overload"], outcome["unloaded"]
        print(
            f"{label}: capacity {outcome['capacity_rps']:,} req/s; offered {o['offered_rps']:,.0f} req/s, answered "
            f"{o['served_rps']:,.0f} ({o['accepted_rps']:,.0f} accepted), wrk timeouts {o['timeouts']}, "
            f"non-2xx {o['non_2xx']}; probe accepted p99 "
            f"{o['accepted_p99_ms']} ms (unloaded {u['accepted_p99_ms']} ms), shed {o['shed']} "
            f"(p99 {o['shed_p99_ms']} ms, Retry-After on {o['shed_with_retry_after']}), probe failures "
            f"{o['failures']}; RSS {outcome['rss_mb_start']} -> peak {outcome['rss_mb_peak']} MB",
            flush=True,
        )
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks overload``."""
    parser = commands.add_parser(
        "overload",
        help="3x capacity with and without overload shedding (PULSE_MAX_IN_FLIGHT)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run")
    parser.add_argument("--max-in-flight", type=int, default=2, help="the bound measured against no bound")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/overload.json"), help="JSON figures")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0
