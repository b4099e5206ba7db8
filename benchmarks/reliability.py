"""``python -m benchmarks reliability [--full]``: fuzzing, soak and faults against real server processes.

Prints the figures (requests tried, 5xx seen, soak p99 and RSS trend, faults survived) and writes them as JSON.
CI runs the short version; ``--full`` is the nightly size (10,000 fuzzed requests, a 10-minute soak).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from hypothesis import HealthCheck, given, settings

from benchmarks.fuzz import FuzzRequest, problems, requests
from benchmarks.procs import ROOT, ServerProcess, free_port, http_get, locust_command, python_command, run_server

ROW = {
    "total_events": 40,
    "total_sessions": 10,
    "avg_events_per_session": 4.0,
    "revenue_per_session": 2.5,
    "active_days": 8,
}
ROW_BODY = json.dumps(ROW).encode()
JSON = {"content-type": "application/json"}


def _serve(model: Path, workdir: Path, name: str, env: dict[str, str] | None = None) -> Any:
    port = free_port()
    return run_server(
        python_command("-m", "server", "--model", str(model), "--port", str(port), "--log-level", "warning"),
        port,
        workdir / f"{name}.log",
        env,
    )


def _send(port: int, request: FuzzRequest, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {} if request.content_type is None else {"content-type": request.content_type}
        connection.request(request.method, request.path, body=request.body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def fuzz(server: ServerProcess, features: list[str], max_body: int, n: int) -> dict[str, Any]:
    """Hypothesis-generated requests against the real process; count 5xx and any other problem."""
    port = int(server.url.rsplit(":", 1)[1])
    seen: dict[str, Any] = {"tried": 0, "status_5xx": 0, "problems": []}

    @settings(max_examples=n, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(requests(features, max_body))
    def probe(request: FuzzRequest) -> None:
        seen["tried"] += 1
        try:
            status, headers, body = _send(port, request)
        except (ConnectionError, http.client.HTTPException) as exc:
            seen["problems"].append(f"{type(exc).__name__} for {request.method} {request.path}")
            return
        seen["status_5xx"] += status >= 500
        seen["problems"].extend(problems(request, status, headers, body))

    probe()
    seen["problems"] = seen["problems"][:20]
    return seen


def _wait_not_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while http_get(url + "/ready", timeout=2)[0] != 503:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} is still ready {timeout:.0f}s after SIGTERM")
        time.sleep(0.05)


def schemathesis_run(
    server: ServerProcess,
    max_examples: int,
    workdir: Path,
    transcript: str = "schemathesis.txt",
    expect_503: bool = False,
) -> dict[str, Any]:
    """schemathesis against our own /openapi.json: no 5xx, responses conform to the schema."""
    # Every check but the two about how tight the schema is: a V2 tensor's data length (N x features) cannot be
    # said in OpenAPI, and an over-long batch is 413 by design (negative_data_rejection expects 400/422).
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "run",
        server.url + "/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        # A draining server answers its readiness probes 503 by design: there, conformance of those bodies to the
        # document is what the run checks, not the absence of 5xx.
        "positive_data_acceptance,negative_data_rejection" + (",not_a_server_error" if expect_503 else ""),
        "--max-examples",
        str(max_examples),
        "--seed",
        "7",
        "--workers",
        "1",
        "--max-response-time",
        "5",
        "--suppress-health-check",
        "all",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=workdir)
    output = result.stdout + result.stderr
    (workdir / transcript).write_text(output)
    return {
        "exit_code": result.returncode,
        "passed": result.returncode == 0,
        "summary": [line.strip("= ") for line in output.splitlines() if line.startswith("=====")][-1:],
    }


def soak(
    server: ServerProcess, seconds: float, users: int, user_rps: float, rows_file: Path, workdir: Path
) -> dict[str, Any]:
    """Fixed offered load for ``seconds``; errors, p99 over time, resident memory trend."""
    process = psutil.Process(server.pid)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.perf_counter()
        while not stop.wait(2.0):
            samples.append((time.perf_counter() - started, process.memory_info().rss / 2**20))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    prefix = workdir / "soak"
    env = {**os.environ, "PULSE_BENCH_ROWS": str(rows_file), "PULSE_BENCH_USER_RPS": str(user_rps)}
    command = [*locust_command(server.url, "MixedTraffic", users, seconds, prefix), "--csv-full-history"]
    subprocess.run(command, capture_output=True, timeout=seconds + 120, env=env)
    stop.set()
    sampler.join()
    stats = pd.read_csv(f"{prefix}_stats.csv")
    total = stats[stats["Name"] == "Aggregated"].iloc[0]
    history = pd.read_csv(f"{prefix}_stats_history.csv")
    history = history[(history["Name"] == "Aggregated") & (history["99%"].astype(str) != "N/A")]
    p99 = history["99%"].astype(float).to_numpy()
    third = max(1, len(p99) // 3)
    warm = next((rss for t, rss in samples if t >= min(60.0, seconds / 6)), samples[0][1] if samples else 0.0)
    end = samples[-1][1] if samples else 0.0
    return {
        "seconds": seconds,
        "offered_rps": users * user_rps,
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "p99_ms": float(total["99%"]),
        "p99_first_third_ms": float(statistics.median(p99[:third])) if len(p99) else None,
        "p99_last_third_ms": float(statistics.median(p99[-third:])) if len(p99) else None,
        "rss_mb_after_warmup": warm,
        "rss_mb_end": end,
        "rss_growth_percent": 100 * (end - warm) / warm if warm else None,
    }


def sigterm_under_load(model: Path, workdir: Path, clients: int = 8, drain: float = 1.5) -> dict[str, Any]:
    """SIGTERM while clients hammer keep-alive connections: every request the server accepted is answered.

    The clients behave like a load balancer in a rolling update: they keep opening connections to this server
    until half the drain period has passed (the endpoint is being removed), and use any open connection until
    the server answers ``Connection: close``.
    """
    counts = {"ok": 0, "refused": 0, "lost": 0, "closed_by_server": 0, "idle_answered": 0, "idle_lost": 0}
    lock = threading.Lock()
    with _serve(model, workdir, "sigterm", {"PULSE_DRAIN_SECONDS": str(drain)}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        idle = []
        for _ in range(clients):  # connections that go quiet before the signal
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/health")
            connection.getresponse().read()
            idle.append(connection)
        done = threading.Event()
        endpoint_removed = threading.Event()

        def hammer() -> None:
            connection: http.client.HTTPConnection | None = None
            while not done.is_set():
                if connection is None and endpoint_removed.is_set():
                    break
                try:
                    if connection is None:
                        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                        connection.connect()
                except OSError:
                    with lock:
                        counts["refused"] += 1  # never accepted: the listener is closed
                    connection = None
                    time.sleep(0.01)
                    continue
                try:
                    connection.request("POST", "/predict", body=ROW_BODY, headers=JSON)
                    response = connection.getresponse()
                    response.read()
                    with lock:
                        counts["ok" if response.status == 200 else "lost"] += 1
                    if response.getheader("connection") == "close":
                        with lock:
                            counts["closed_by_server"] += 1
                        connection.close()
                        connection = None
                except (OSError, http.client.HTTPException):
                    with lock:
                        counts["lost"] += 1
                    connection = None

        threads = [threading.Thread(target=hammer) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        server.process.send_signal(signal.SIGTERM)
        threading.Timer(drain / 2, endpoint_removed.set).start()
        time.sleep(0.3)
        for connection in idle:  # an idle keep-alive connection used during the drain
            try:
                connection.request("POST", "/predict", body=ROW_BODY, headers=JSON)
                response = connection.getresponse()
                response.read()
                counts["idle_answered" if response.status == 200 else "idle_lost"] += 1
            except (OSError, http.client.HTTPException):
                counts["idle_lost"] += 1
        server.process.wait(timeout=30)
        done.set()
        for thread in threads:
            thread.join()
    counts["exit_code"] = server.process.returncode
    return counts


def unwritable_request_log(model: Path, workdir: Path, n: int = 200) -> dict[str, Any]:
    """The request log on a full disk (/dev/full) never fails a request; the drops are counted."""
    with _serve(model, workdir, "devfull", {"PULSE_REQUEST_LOG": "/dev/full"}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        statuses = [_send(port, FuzzRequest("POST", "/predict", "application/json", ROW_BODY))[0] for _ in range(n)]
        time.sleep(0.5)
        metrics = http_get(server.url + "/metrics")[1].decode()
    errors = next(
        (
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("pulse_request_log_write_errors_total")
        ),
        0.0,
    )
    return {"requests": n, "ok": statuses.count(200), "write_errors": errors}


def slow_clients(model: Path, workdir: Path, slow: int = 64, seconds: float = 4.0) -> dict[str, Any]:
    """Slowloris-style: many connections trickle their headers; other clients are served as usual."""
    with _serve(model, workdir, "slowloris") as server:
        port = int(server.url.rsplit(":", 1)[1])
        sockets = []
        for _ in range(slow):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        latencies, statuses = [], []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for sock in sockets:
                try:
                    sock.sendall(b"X-a: b\r\n")
                except OSError:
                    pass
            for _ in range(20):
                started = time.perf_counter()
                statuses.append(_send(port, FuzzRequest("POST", "/predict", "application/json", ROW_BODY))[0])
                latencies.append(time.perf_counter() - started)
            time.sleep(0.2)
        for sock in sockets:
            sock.close()
    latencies.sort()
    return {
        "slow_connections": slow,
        "requests": len(statuses),
        "ok": statuses.count(200),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
    }


def bad_models(model: Path, workdir: Path) -> dict[str, Any]:
    """Garbage, truncated and mismatched model files stop start-up with one line and exit code 2."""
    damages: dict[str, Callable[[Path], object]] = {
        "garbage": lambda p: p.write_bytes(b"\x00garbage" * 100),
        "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]),
        "wrong sha256": lambda p: p.with_name("model.onnx.sha256").write_text("0" * 64 + "  model.onnx\n"),
    }
    results = {}
    for name, damage in damages.items():
        folder = workdir / name.replace(" ", "_")
        folder.mkdir()
        shutil.copy(model, folder / "model.onnx")
        shutil.copy(model.with_name("model.onnx.sha256"), folder / "model.onnx.sha256")
        damage(folder / "model.onnx")
        run = subprocess.run(
            python_command("-m", "server", "--model", str(folder / "model.onnx"), "--port", str(free_port())),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        lines = run.stderr.strip().splitlines()
        results[name] = {"exit_code": run.returncode, "one_line": len(lines) == 1, "message": lines[0] if lines else ""}
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = args.artifacts / "model.onnx"
    metrics = json.loads((args.artifacts / "metrics.json").read_text())
    features = metrics["features"]
    workdir = Path(tempfile.mkdtemp(prefix="pulse-reliability-"))
    table = pd.read_parquet(args.artifacts / "features.parquet")
    rows_file = workdir / "rows.json"
    rows_file.write_text(table[features].head(1000).to_json(orient="records"))
    results: dict[str, Any] = {"size": "full" if args.full else "ci"}
    with _serve(model, workdir, "fuzz") as server:
        results["fuzz"] = fuzz(server, features, 1024 * 1024, args.fuzz_requests)
        print(
            f"fuzz: {results['fuzz']['tried']} requests, {results['fuzz']['status_5xx']} 5xx, "
            f"{len(results['fuzz']['problems'])} problems",
            flush=True,
        )
        results["schemathesis"] = schemathesis_run(server, args.schemathesis_examples, workdir)
        print(
            f"schemathesis: {'passed' if results['schemathesis']['passed'] else 'FAILED'} "
            f"{results['schemathesis']['summary']}",
            flush=True,
        )
    # The same checks while draining: readiness answers 503, and those bodies must match the document too.
    with _serve(model, workdir, "draining", {"PULSE_DRAIN_SECONDS": "600"}) as server:
        os.kill(server.pid, signal.SIGTERM)
        _wait_not_ready(server.url)
        results["schemathesis_draining"] = schemathesis_run(
            server, max(1, args.schemathesis_examples // 4), workdir, "schemathesis_draining.txt", expect_503=True
        )
        print(
            f"schemathesis while draining: {'passed' if results['schemathesis_draining']['passed'] else 'FAILED'} "
            f"{results['schemathesis_draining']['summary']}",
            flush=True,
        )
    with _serve(model, workdir, "soak") as server:
        results["soak"] = soak(server, args.soak_seconds, args.soak_users, args.soak_user_rps, rows_file, workdir)
    s = results["soak"]
    print(
        f"soak: {s['requests']} requests in {s['seconds']:.0f}s at {s['offered_rps']:.0f}/s offered, "
        f"{s['failures']} failures, p99 {s['p99_first_third_ms']} -> {s['p99_last_third_ms']} ms, "
        f"RSS {s['rss_mb_after_warmup']:.1f} -> {s['rss_mb_end']:.1f} MB ({s['rss_growth_percent']:+.2f}%)",
        flush=True,
    )
    results["faults"] = {
        "sigterm_under_load": sigterm_under_load(model, workdir),
        "unwritable_request_log": unwritable_request_log(model, workdir),
        "slow_clients": slow_clients(model, workdir),
        "bad_models": bad_models(model, workdir),
    }
    f = results["faults"]
    survived = [
        f["sigterm_under_load"]["lost"] == 0 and f["sigterm_under_load"]["idle_lost"] == 0,
        f["unwritable_request_log"]["ok"] == f["unwritable_request_log"]["requests"],
        f["slow_clients"]["ok"] == f["slow_clients"]["requests"],
        *(m["exit_code"] == 2 and m["one_line"] for m in f["bad_models"].values()),
    ]
    results["faults_survived"] = f"{sum(survived)}/{len(survived)}"
    print(f"faults survived: {results['faults_survived']}: {json.dumps(f)}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks reliability``."""
    parser = commands.add_parser(
        "reliability",
        help="fuzzing, schemathesis, soak and faults against real server processes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    parser.add_argument("--full", action="store_true", help="nightly size: 10,000 fuzzed requests, 10-minute soak")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reliability.json"), help="JSON figures")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    args.fuzz_requests = 10_000 if args.full else 600
    args.schemathesis_examples = 200 if args.full else 15
    args.soak_seconds = 600.0 if args.full else 60.0
    args.soak_users, args.soak_user_rps = 10, 20.0
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    ok = (
        results["fuzz"]["status_5xx"] == 0
        and not results["fuzz"]["problems"]
        and results["schemathesis"]["passed"]
        and results["soak"]["failures"] == 0
        and results["faults_survived"].split("/")[0] == results["faults_survived"].split("/")[1]
    )
    return 0 if ok else 1
