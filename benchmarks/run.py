"""``python -m benchmarks run``: our server side by side with the original design and the framework's ceilings.

Each server runs alone on core 0 (one worker); wrk or locust runs on core 1. Every figure is the median
of interleaved rounds with the min-max spread, because the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from benchmarks.procs import ROOT, ServerProcess, free_port, locust_command, python_command, run_server, stop
from benchmarks.report import SHADOW_SCENARIO, STOCK, write_report

SERVER_CORE, LOAD_CORE = 0, 1
WRK_CONNECTIONS = 16
EXPLAIN_SCENARIO = "/predict?explain=3 [1]"
COLUMNS_SCENARIO = "/predict columns [1000]"
BINARY_SCENARIO = "/v2 infer binary [1000]"
BINARY_BOTH_WAYS_SCENARIO = "/v2 infer binary in and out [1000]"
GRPC_SCENARIO = "gRPC ModelInfer raw [{n}]"
GRPC_CONSTANT = " constant"  # benchmarks.reference.grpc_constant: grpc.aio alone, answering each size in kind
GRPC_ROUTE = "/inference.GRPCInferenceService/ModelInfer"
BATCH_SIZES = (10, 100, 1000)
DISTINCT_BODIES = 8  # per scenario, sent in turn

# Each run sends its bodies in turn, pre-formatted once: a single body repeated lets the CPU's branch predictor learn
# its path through the trees, which makes onnxruntime up to 20% faster than on any real traffic (see
# ``in_process_floor``, which times both).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.path = "{path}"
{headers}
local files = {{{files}}}
local requests = {{}}
local turn = 0
init = function(args)
  for _, name in ipairs(files) do
    local f = assert(io.open(name, "rb")); local body = f:read("*a"); f:close()
    requests[#requests + 1] = wrk.format(nil, nil, nil, body)
  end
end
request = function()
  turn = turn % #requests + 1
  return requests[turn]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d,\\"non_2xx\\":%d," ..
    "\\"p50_us\\":%d,\\"p95_us\\":%d,\\"p99_us\\":%d}}\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(95),
    latency:percentile(99)))
end
"""


@contextlib.contextmanager
def run_grpc_constant(port: int, log_path: Path) -> Iterator[ServerProcess]:
    """The gRPC door's ceiling (``benchmarks.reference.grpc_constant``) on the server core, once its port answers."""
    import grpc

    command = [*_taskset(SERVER_CORE), *python_command("-m", "benchmarks.reference.grpc_constant", "--port", str(port))]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        yield ServerProcess(process, "", time.perf_counter() - started, log_path)
    finally:
        stop(process)


def _grpc_failed(url: str) -> float:
    """The gRPC ModelInfer calls our server has answered with a status other than OK so far, from its /metrics."""
    from benchmarks.procs import metric

    total = metric(url, "pulse_http_requests_total", route=GRPC_ROUTE)
    return total - metric(url, "pulse_http_requests_total", route=GRPC_ROUTE, status="200")


def _server_commands(artifacts: Path, port: int) -> dict[str, list[str]]:
    p = str(port)
    return {
        "ours": python_command(
            "-m", "server", "--model", str(artifacts / "model.onnx"), "--port", p, "--log-level", "warning"
        ),
        "ours_stock": python_command(  # the same server in stock mode (SERVER_ENV): uvicorn's own protocol
            "-m", "server", "--model", str(artifacts / "model.onnx"), "--port", p, "--log-level", "warning"
        ),
        "ours_shadow": python_command(  # the same server with a shadow model on 10% of requests (SERVER_ENV)
            "-m", "server", "--model", str(artifacts / "model.onnx"), "--port", p, "--log-level", "warning"
        ),
        "original": python_command(
            "-m", "benchmarks.reference.fastapi_sklearn", "--port", p, "--model", str(artifacts / "model.joblib")
        ),
        "bare_starlette": python_command("-m", "benchmarks.reference.bare_starlette", "--port", p),
        "raw_asgi": python_command("-m", "benchmarks.reference.raw_asgi", "--port", p),
        "python_floor": python_command("-m", "benchmarks.reference.python_floor", "--port", p),
    }


SERVER_ENV = {  # ours adds PULSE_GRPC_PORT; the shadow's candidate is the served model's file, loaded again
    "ours": {"PULSE_HTTP": "fast"},
    "ours_stock": {"PULSE_HTTP": "stock"},
    "ours_shadow": {"PULSE_HTTP": "fast", "PULSE_SHADOW_SAMPLE": "0.1"},
}


def _taskset(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and psutil.cpu_count() > 1 else []


def run_wrk(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    seconds: float,
    workdir: Path,
    headers: dict[str, str] | None = None,
    connections: int = WRK_CONNECTIONS,
) -> dict[str, float]:
    """One wrk run sending ``bodies`` in turn; requests/s and latency percentiles in microseconds."""
    files = []
    for body in bodies:
        files.append(workdir / f"body-{abs(hash(body))}.json")
        files[-1].write_bytes(body)
    script = workdir / f"wrk-{abs(hash((path, *bodies)))}.lua"
    lua_headers = "\n".join(
        f'wrk.headers["{name}"] = "{value}"'
        for name, value in (headers or {"Content-Type": "application/json"}).items()
    )
    files_lua = ", ".join(f'"{file}"' for file in files)
    script.write_text(WRK_SCRIPT.format(path=path, files=files_lua, headers=lua_headers))
    command = [
        *_taskset(LOAD_CORE),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    stats = json.loads(out[out.index("JSON ") + 5 :].splitlines()[0])
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def run_h2load(port: int, body: bytes, seconds: float, workdir: Path) -> dict[str, float]:
    """One h2load run (nghttp2's C HTTP/2 load generator: a Python client would be slower than the server it
    measures) sending ``body``, a serialized ``ModelInferRequest``, as gRPC calls with WRK_CONNECTIONS in flight
    (4 connections x 4 streams); calls/s and the mean latency in microseconds."""
    file = workdir / f"grpc-{abs(hash(body))}.bin"
    file.write_bytes(struct.pack(">?I", False, len(body)) + body)  # the gRPC message frame: uncompressed, length
    command = [
        *_taskset(LOAD_CORE),
        "h2load",
        "-c4",
        f"-m{WRK_CONNECTIONS // 4}",
        f"-D{max(1, round(seconds))}",
        "-d",
        str(file),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    latency = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if finished is None or counts is None or latency is None:
        raise RuntimeError(f"h2load's output is not what it was: {out[-800:]}")
    scale = {"us": 1.0, "ms": 1e3, "s": 1e6}[latency.group(2)]
    done, succeeded = int(counts.group(2)), int(counts.group(3))
    return {"rps": float(finished.group(2)), "requests": done, "non_2xx": done - succeeded,
            "mean_us": float(latency.group(1)) * scale}  # fmt: skip


def scoring_calls(url: str) -> tuple[float, float]:
    """(rows scored, onnxruntime calls) so far, from the server's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("pulse_predicted_rows_total", "pulse_model_compute_seconds_count"):
            found[name] = float(value)
    return found["pulse_predicted_rows_total"], found["pulse_model_compute_seconds_count"]


def grpc_bodies(batches: list[np.ndarray]) -> list[bytes]:
    """Serialized ``ModelInferRequest``s of ``batches``, the values as raw little-endian FP32 bytes."""
    from server.core.v2_grpc import ModelInferRequest

    bodies = []
    for X in batches:
        message: Any = ModelInferRequest(model_name="churn")
        message.inputs.add(name="features", datatype="FP32", shape=X.shape)
        message.raw_input_contents.append(X.astype("<f4").tobytes())
        bodies.append(message.SerializeToString())
    return bodies


def run_locust(
    url: str, user_class: str, users: int, user_rps: float, seconds: float, rows_file: Path, workdir: Path
) -> dict[str, Any]:
    """One headless locust run at a fixed offered load (``users`` x ``user_rps``)."""
    prefix = workdir / f"locust-{user_class}-{int(time.time() * 1000)}"
    command = [*_taskset(LOAD_CORE), *locust_command(url, user_class, users, seconds, prefix)]
    env = {**os.environ, "PULSE_BENCH_ROWS": str(rows_file), "PULSE_BENCH_USER_RPS": str(user_rps)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, env=env)
    stats = pd.read_csv(f"{prefix}_stats.csv")
    total = stats[stats["Name"] == "Aggregated"].iloc[0]
    return {
        "rps": float(total["Requests/s"]),
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "exit_code": result.returncode,
        "cpu_warning": "CPU usage" in (result.stderr + result.stdout),
    }


class Usage:
    """CPU seconds and resident memory of a server process over a measured run."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._cpu = self._cpu_seconds()
        self._wall = time.perf_counter()

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        return {
            "cpu_percent": 100 * (self._cpu_seconds() - self._cpu) / wall,
            "rss_mb": self._process.memory_info().rss / 2**20,
        }


def in_process_floor(artifacts: Path, rows: np.ndarray, repeat: int) -> dict[str, float]:
    """What onnxruntime itself costs for this model on one thread: the floor the HTTP figures compare to.

    Like the HTTP scenarios it cycles through the distinct rows and batches they send. It also times one batch
    repeated, for the record: the branch predictor learns that batch's paths through the trees (~20% faster here).
    """
    from common.model.loader import load_model

    model = load_model(artifacts / "model.onnx", threads=1)
    ones = [_batch(rows, 1, i).tolist()[0] for i in range(DISTINCT_BODIES)]
    for i in range(200):
        model.predict_one(ones[i % DISTINCT_BODIES])
    started = time.perf_counter()
    for i in range(repeat):
        model.predict_one(ones[i % DISTINCT_BODIES])
    single_us = (time.perf_counter() - started) / repeat * 1e6
    batches = [_batch(rows, 1000, i) for i in range(DISTINCT_BODIES)]
    batch_seconds = batch_call_seconds(model.predict_proba, batches, max(5, repeat // 200))
    repeated_seconds = batch_call_seconds(model.predict_proba, batches[:1], max(5, repeat // 200))
    import joblib

    forest = joblib.load(artifacts / "model.joblib")
    frame = pd.DataFrame(rows[:1], columns=list(model.info.features))
    for _ in range(5):
        forest.predict_proba(frame)
    started = time.perf_counter()
    for _ in range(20):
        forest.predict_proba(frame)
    sklearn_single_us = (time.perf_counter() - started) / 20 * 1e6
    return {
        "onnx_single_row_us": single_us,
        "onnx_rows_per_s_1000": 1000 / batch_seconds,
        "onnx_rows_per_s_1000_one_batch_repeated": 1000 / repeated_seconds,
        "sklearn_single_row_us": sklearn_single_us,
        **explain_floor(model, forest, batches[0], repeat),
    }


def batch_call_seconds(call: Any, batches: Sequence[np.ndarray], repeat: int) -> float:
    """Median seconds of ``call`` on each batch in turn (after one unmeasured pass over them)."""
    for batch in batches:
        call(batch)
    timings = []
    for i in range(repeat):
        started = time.perf_counter()
        call(batches[i % len(batches)])
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def explain_floor(model: Any, forest: Any, batch: np.ndarray, repeat: int) -> dict[str, float]:
    """Reasons in-process (one row; 1000-row batches): the model file's graph, which the server calls, and the
    per-row algorithm in Python (its fallback), beside shap.TreeExplainer's C++ on the same rows."""
    if model.explainer is None:
        return {}
    import shap

    explainer = model.explainer
    calls = max(50, repeat // 10)
    singles = {}
    for name, call in (("graph", model.explain), ("python", explainer.shap_values)):
        for _ in range(50):
            call(batch[:1])
        started = time.perf_counter()
        for _ in range(calls):
            call(batch[:1])
        singles[name] = (time.perf_counter() - started) / calls * 1e6
    graph: list[float] = []
    python: list[float] = []
    theirs: list[float] = []
    reference = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    frame = pd.DataFrame(batch.astype(np.float64), columns=list(model.info.features))
    for _ in range(5):
        for timings, call in ((graph, lambda: model.explain(batch)), (python, lambda: explainer.shap_values(batch))):
            started = time.perf_counter()
            call()
            timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        reference.shap_values(frame)
        theirs.append(time.perf_counter() - started)
    return {
        "explain_single_row_us": singles["graph"] if model.explains_in_graph else singles["python"],
        "explain_python_single_row_us": singles["python"],
        "explain_rows_per_s_1000": len(batch) / statistics.median(graph),
        "explain_python_rows_per_s_1000": len(batch) / statistics.median(python),
        "shap_rows_per_s_1000": len(batch) / statistics.median(theirs),
        "explain_in_graph": float(model.explains_in_graph),
    }


def _rows(
    artifacts: Path, workdir: Path, n: int = DISTINCT_BODIES * max(BATCH_SIZES)
) -> tuple[list[dict[str, float]], np.ndarray, Path]:
    metrics = json.loads((artifacts / "metrics.json").read_text())
    table = pd.read_parquet(artifacts / "features.parquet")
    frame = table.loc[table["split"] == "train", metrics["features"]].sample(n=n, random_state=7, replace=True)
    records = frame.to_dict(orient="records")
    rows_file = workdir / "rows.json"
    rows_file.write_text(json.dumps(records))
    return records, frame.to_numpy(np.float32), rows_file


def _batch(rows: np.ndarray, n: int, i: int) -> np.ndarray:
    """The ``i``-th of the distinct ``n``-row batches the scenarios send (rows ``i*n`` to ``(i+1)*n``)."""
    return np.ascontiguousarray(rows[i * n : (i + 1) * n], dtype=np.float32)


def _binary_request(
    tensor: dict[str, Any], batches: list[np.ndarray], parameters: dict[str, Any]
) -> tuple[list[bytes], dict[str, str]]:
    """Bodies and headers of V2 infer requests sending ``batches`` with the binary tensor extension."""
    nbytes = batches[0].nbytes
    header = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": nbytes}}], "parameters": parameters}
    ).encode()
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return [header + X.astype("<f4").tobytes() for X in batches], headers


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _conditions(args: argparse.Namespace) -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "cpu": cpu,
        "cores": psutil.cpu_count(),
        "server_core": SERVER_CORE,
        "load_core": LOAD_CORE,
        "workers": 1,
        "ort_threads": 1,
        "wrk_connections": WRK_CONNECTIONS,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "warmup": f"{args.warmup}s wrk run per server per round, not recorded",
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "starlette": version("starlette"),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "scikit-learn": version("scikit-learn"),
        "locust": version("locust"),
        "wrk": wrk[0] if wrk else "unknown",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    artifacts: Path = args.artifacts
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk (Debian/Ubuntu) or brew install wrk")
    for needed in ("model.onnx", "model.joblib", "features.parquet", "metrics.json"):
        if not (artifacts / needed).is_file():
            raise SystemExit(f"{artifacts / needed} is missing: run `make export` first")
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    records, rows, rows_file = _rows(artifacts, workdir)
    single = [json.dumps(record).encode() for record in records[:DISTINCT_BODIES]]
    bodies = {
        f"/predict [{n}]": [json.dumps(records[i * n : (i + 1) * n]).encode() for i in range(DISTINCT_BODIES)]
        for n in BATCH_SIZES
    }
    bodies[COLUMNS_SCENARIO] = [
        json.dumps({name: [r[name] for r in records[i * 1000 : (i + 1) * 1000]] for name in records[0]}).encode()
        for i in range(DISTINCT_BODIES)
    ]
    tensors = {n: [_batch(rows, n, i) for i in range(DISTINCT_BODIES)] for n in (1, 1000)}
    tensor_spec = {"name": "features", "shape": [1000, rows.shape[1]], "datatype": "FP32"}
    v2_bodies = {
        f"/v2 infer [{n}]": [
            json.dumps({"inputs": [{**tensor_spec, "shape": [n, rows.shape[1]], "data": X.ravel().tolist()}]}).encode()
            for X in batches
        ]
        for n, batches in tensors.items()
    }
    binary = {  # the binary tensor extension: a JSON answer, or the probabilities' bytes after the JSON
        label: _binary_request(tensor_spec, tensors[1000], parameters)
        for label, parameters in ((BINARY_SCENARIO, {}), (BINARY_BOTH_WAYS_SCENARIO, {"binary_data_output": True}))
    }
    results: dict[str, Any] = {"conditions": _conditions(args), "single": {}, "ours": {}, "locust": {}, "startup_s": {}}
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}

    grpc_scenarios = {GRPC_SCENARIO.format(n=n): grpc_bodies(batches) for n, batches in tensors.items()}
    grpc_port, grpc_constant_port = free_port(), free_port()

    with ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        for name, command in _server_commands(artifacts, 0).items():
            port = free_port()
            command = _server_commands(artifacts, port)[name]
            env = {**SERVER_ENV.get(name, {}), **({"PULSE_GRPC_PORT": str(grpc_port)} if name == "ours" else {})}
            if name == "ours_shadow":
                env["PULSE_SHADOW_MODEL"] = str(artifacts / "model.onnx")
            server = stack.enter_context(
                run_server([*_taskset(SERVER_CORE), *command], port, workdir / f"{name}.log", env, timeout=120)
            )
            servers[name] = server
            results["startup_s"][name] = server.ready_seconds
        http_servers = list(servers)
        servers["grpc_constant"] = stack.enter_context(
            run_grpc_constant(grpc_constant_port, workdir / "grpc_constant.log")
        )

        def measure(key: str, name: str, path: str, bodies: list[bytes], headers: dict[str, str] | None = None) -> None:
            server = servers[name]
            run_wrk(server.url, path, bodies, args.warmup, workdir, headers)
            usage = Usage(server.pid)
            calls = scoring_calls(server.url) if name.startswith("ours") else None
            stats = run_wrk(server.url, path, bodies, args.seconds, workdir, headers)
            if calls is not None:  # how many rows each onnxruntime call scored: the coalescing at work
                rows, count = (after - before for after, before in zip(scoring_calls(server.url), calls, strict=True))
                stats["rows_per_call"] = rows / max(count, 1)
            raw.setdefault(key, {}).setdefault(name, []).append({**stats, **usage.stop()})

        def measure_grpc(key: str, name: str, port: int, body: bytes) -> None:
            run_h2load(port, body, args.warmup, workdir)
            usage = Usage(servers[name].pid)
            before = _grpc_failed(servers[name].url) if name == "ours" else None
            stats = run_h2load(port, body, args.seconds, workdir)
            if before is not None:  # h2load sees HTTP statuses; the gRPC status of each call is in our metrics
                stats["grpc_failed"] = _grpc_failed(servers[name].url) - before
            raw.setdefault(key, {}).setdefault(name, []).append({**stats, **usage.stop()})

        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
            for name in http_servers:
                measure("single", name, "/predict", single)
            for label, grpc_requests in grpc_scenarios.items():
                measure_grpc(label, "ours", grpc_port, grpc_requests[0])
                measure_grpc(label + GRPC_CONSTANT, "grpc_constant", grpc_constant_port, grpc_requests[0])
            measure(EXPLAIN_SCENARIO, "ours", "/predict?explain=3", single)
            measure(SHADOW_SCENARIO, "ours_shadow", "/predict", bodies["/predict [1000]"])
            for target, suffix in (("ours", ""), ("ours_stock", STOCK)):
                for label, batch_bodies in bodies.items():
                    if target == "ours" or label.endswith("[1000]"):
                        measure(label + suffix, target, "/predict", batch_bodies)
                for label, batch_bodies in v2_bodies.items():
                    if target == "ours" or label.endswith("[1000]"):
                        measure(label + suffix, target, "/v2/models/churn/infer", batch_bodies)
                for label, (binary_bodies, binary_headers) in binary.items():
                    measure(label + suffix, target, "/v2/models/churn/infer", binary_bodies, binary_headers)
            for name, user_class in (("ours", "MixedTraffic"), ("original", "SinglePredict")):
                stats = run_locust(
                    servers[name].url,
                    user_class,
                    args.locust_users,
                    args.locust_user_rps,
                    args.seconds,
                    rows_file,
                    workdir,
                )
                results["locust"].setdefault(name, []).append({"user_class": user_class, **stats})

    for key, by_server in raw.items():
        target = results["single"] if key == "single" else results["ours"]
        for name, runs in by_server.items():
            entry: dict[str, Any] = {
                metric: _summary([r[metric] for r in runs])
                for metric in ("rps", "p50_us", "p95_us", "p99_us", "mean_us", "cpu_percent", "rss_mb")
                if metric in runs[0]  # h2load gives a mean latency, wrk percentiles
            }
            # A gRPC call that failed is still HTTP 200 to h2load: our metrics count the calls answered OK.
            entry["errors"] = sum(r.get("errors", 0) + r["non_2xx"] + r.get("grpc_failed", 0) for r in runs)
            if all("rows_per_call" in r for r in runs):
                entry["rows_per_call"] = _summary([r["rows_per_call"] for r in runs])
            if key != "single":
                n_rows = int(key.split("[")[1].split("]")[0])
                entry["rows_per_s"] = _summary([r["rps"] * n_rows for r in runs])
            target[name if key == "single" else key] = entry
    results["in_process"] = in_process_floor(artifacts, rows, repeat=args.inprocess_repeat)
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks run``."""
    bench = commands.add_parser(
        "run",
        help="run every speed scenario and write the report",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of each measured run, in seconds")
    bench.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up before each run, in seconds")
    bench.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are their medians")
    bench.add_argument("--locust-users", type=int, default=10, help="simulated users of the fixed-load locust run")
    bench.add_argument("--locust-user-rps", type=float, default=8.0, help="offered load per locust user, requests/s")
    bench.add_argument(
        "--inprocess-repeat", type=int, default=20_000, help="calls timed for the in-process onnxruntime floor"
    )
    bench.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for raw results")
    bench.add_argument(
        "--assets",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for the report table and plots (`make assets` points it at assets/)",
    )
    bench.add_argument("--smoke", action="store_true", help="seconds-long runs of every scenario (CI)")
    bench.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.smoke:
        args.seconds, args.warmup, args.rounds, args.inprocess_repeat = 1.0, 1.0, 1, 500
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, args.assets)
    print((args.assets / "benchmarks.md").read_text())
    return 0
