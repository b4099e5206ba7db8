"""``python -m benchmarks chaos``: the operations' guarantees under concurrent operations and faults, checked over
the whole history of a seeded run (Jepsen-style: record everything, then check invariants).

A real server with 3 workers behind the supervisor, API keys on, two same-schema models and one with another
feature count in its model folder, its gRPC port open. Client threads stream ``/predict`` (single rows and batches;
by Content-Length, the fast path, and chunked, the ASGI door), V2 infer, and gRPC ``ModelInfer`` calls. An
operator thread, at random moments, does one of: admin swaps from several clients at once, SIGHUP to the
supervisor, SIGKILL of a random worker (the supervisor restarts it), a forced swap to the model with another
feature count (and back), a ``/metrics`` scrape, a key-file reload.
Every answer and operation is recorded; then, offline, these must hold:

- no 5xx (on gRPC: no status but OK, INVALID_ARGUMENT after a forced swap, and UNAVAILABLE, which is a reset), and
  no connection reset except within a moment of a worker being killed;
- every 200 carries exactly the probability its named model gives the row (onnxruntime, offline);
- every scrape is 200 and the request counter never goes backwards;
- an admin swap answered 200 was served by every worker when it answered (unless another swap had begun);
- after the last operation, every live worker serves one model within 2 s.

The seed fixes the operations, their timing and the rows: a failing history replays with the same seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.procs import free_port, http_get, python_command, run_server, worker_processes

ADMIN_KEY, PREDICT_KEY = "chaos-admin-key-0123456789", "chaos-predict-key-0123456789"
METRICS_KEY = "chaos-metrics-key-0123456789"  # the scraper's: /metrics needs a metrics key with keys on
SCRAPER = {"authorization": f"Bearer {METRICS_KEY}"}
RESET_GRACE_SECONDS = 1.5  # a reset this long after a SIGKILL is the killed worker's own connection
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Size:
    seconds: float = 40.0
    clients: int = 4
    grpc_clients: int = 1
    mean_gap: float = 0.4  # seconds between operations, on average


FULL = Size(seconds=600.0, clients=8, grpc_clients=2, mean_gap=0.4)


@dataclass
class History:
    answers: list[tuple[float, str, int, str, Any, Any]] = field(
        default_factory=list
    )  # t, kind, status, version, row, p
    resets: list[float] = field(default_factory=list)
    operations: list[dict[str, Any]] = field(default_factory=list)
    scrapes: list[tuple[float, int, float]] = field(default_factory=list)  # t, status, requests total
    lock: threading.Lock = field(default_factory=threading.Lock)


def _models(workdir: Path) -> dict[str, Path]:
    """Three models in one folder: ``a`` and ``b`` on the seed features (same schema, different forests), ``c`` on
    the behaviour features (one more input: swapping to it needs force)."""
    import train.fit
    from export.export import export_model
    from train.config import TrainConfig
    from train.pipeline import run_training
    from train.simulate import SimulationConfig, simulate_events

    log = workdir / "events.parquet"
    simulate_events(SimulationConfig(users=1500, days=75, seed=11), log)
    train.fit.PARAM_GRID = {"n_estimators": [10], "max_depth": [4], "min_samples_leaf": [20]}  # seconds, not minutes
    found = {}
    for name, seed, feature_set in (("a", 11, "seed"), ("b", 12, "seed"), ("c", 13, "behaviour")):
        root = workdir / "models" / name
        config = TrainConfig(events=log, out=root, session_col="session_id", revenue_col="revenue", seed=seed,
                             shap_rows=20, feature_set=feature_set)  # fmt: skip
        run_training(config)
        export_model(root)
        found[name] = root / "model.onnx"
        time.sleep(1.1)  # versions are named by the training's second
    return found


def _row(rng: random.Random, features: tuple[str, ...]) -> dict[str, float]:
    sessions = rng.randint(1, 20)
    values = {
        "total_events": float(sessions * rng.randint(1, 8)),
        "total_sessions": float(sessions),
        "active_days": float(rng.randint(1, sessions)),
        "revenue_per_session": round(rng.random() * 5, 2),
        "days_since_last_event": float(rng.randint(0, 60)),
    }
    values["avg_events_per_session"] = values["total_events"] / sessions
    return {name: values[name] for name in features}


class Client(threading.Thread):
    """One keep-alive connection streaming requests; every answer (or reset) into the history."""

    def __init__(self, port: int, seed: int, schemas: list[tuple[str, ...]], history: History, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.rng, self.schemas, self.history, self.stop = port, random.Random(seed), schemas, history, stop
        self.schema = schemas[0]

    def run(self) -> None:
        connection = self._connect()
        headers = {"content-type": "application/json", "authorization": f"Bearer {PREDICT_KEY}"}
        while not self.stop.is_set():
            kind = self.rng.choice(("single", "batch", "chunked", "v2"))
            rows = [_row(self.rng, self.schema) for _ in range(1 if kind in ("single", "v2") else 3)]
            try:
                if kind == "v2":
                    data = [value for row in rows for value in row.values()]
                    tensor = {"name": "features", "datatype": "FP32", "shape": [1, len(self.schema)], "data": data}
                    connection.request("POST", "/v2/models/churn/infer", json.dumps({"inputs": [tensor]}), headers)
                elif kind == "chunked":
                    body = iter([json.dumps(rows).encode()])
                    connection.request("POST", "/predict", body, headers, encode_chunked=True)
                else:
                    connection.request("POST", "/predict", json.dumps(rows[0] if kind == "single" else rows), headers)
                response = connection.getresponse()
                status, payload = response.status, json.loads(response.read())
            except (ConnectionError, http.client.HTTPException, OSError):
                with self.history.lock:
                    self.history.resets.append(time.monotonic())
                connection.close()
                connection = self._connect()
                continue
            now = time.monotonic()
            if status == 422:  # the served model's inputs changed under this client (a forced swap): follow it
                self.follow_schema()
            with self.history.lock:
                if status != 200:
                    self.history.answers.append((now, kind, status, "", None, None))
                elif kind == "v2":
                    probability = payload["outputs"][0]["data"][1]  # [1, 2]: P(stay), P(churn)
                    self.history.answers.append((now, kind, 200, payload["model_version"], [rows[0]], [probability]))
                elif kind == "single":
                    self.history.answers.append(
                        (now, kind, 200, payload["model_version"], [rows[0]], [payload["churn_probability"]])
                    )
                else:
                    versions = {item["model_version"] for item in payload}
                    version = versions.pop() if len(versions) == 1 else "mixed"
                    probabilities = [item["churn_probability"] for item in payload]
                    self.history.answers.append((now, kind, 200, version, rows, probabilities))
        connection.close()

    def follow_schema(self) -> None:
        """Send the other model's features from now on (a forced swap changed the served model's inputs)."""
        self.schema = self.schemas[(self.schemas.index(self.schema) + 1) % len(self.schemas)]

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


class GrpcClient(Client):
    """One gRPC channel streaming single-row ``ModelInfer`` calls; every answer (or reset) into the history."""

    def run(self) -> None:
        import grpc

        from server.core.v2_grpc import ModelInferRequest, ModelInferResponse

        metadata = (("authorization", f"Bearer {PREDICT_KEY}"),)
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            while not self.stop.is_set():
                row = _row(self.rng, self.schema)
                request: Any = ModelInferRequest(model_name="churn")
                request.inputs.add(name="features", datatype="FP32", shape=[1, len(row)])
                request.raw_input_contents.append(np.array([list(row.values())], dtype="<f4").tobytes())
                try:
                    response: Any = ModelInferResponse.FromString(
                        infer(request.SerializeToString(), metadata=metadata, timeout=30)
                    )
                except grpc.RpcError as exc:
                    self._failed(exc.code())
                    continue
                probability = float(np.frombuffer(response.raw_output_contents[0], dtype="<f4")[1])
                with self.history.lock:
                    self.history.answers.append(
                        (time.monotonic(), "grpc", 200, response.model_version, [row], [probability])
                    )

    def _failed(self, code: Any) -> None:
        import grpc

        now = time.monotonic()
        if code == grpc.StatusCode.INVALID_ARGUMENT:  # the served model's inputs changed (a forced swap): follow
            self.follow_schema()
        with self.history.lock:
            if code == grpc.StatusCode.UNAVAILABLE:  # the worker holding the connection is gone: a reset
                self.history.resets.append(now)
            else:
                self.history.answers.append((now, "grpc", 422 if code == grpc.StatusCode.INVALID_ARGUMENT else 500,
                                             "", None, None))  # fmt: skip


def _post(port: int, path: str, body: object, key: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _served(url: str) -> tuple[dict[str, float], float]:
    """Live workers per model sha256, and the request counter's total, from one scrape."""
    status, body = http_get(url + "/metrics", timeout=10, headers=SCRAPER)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    served: dict[str, float] = {}
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("pulse_model_info{"):
            served[line.split('sha256="')[1].split('"')[0]] = float(line.split()[-1])
        elif line.startswith("pulse_http_requests_total{"):
            total += float(line.split()[-1])
    return served, total


class Operator:
    """The faults and operations, at seeded random moments."""

    def __init__(self, server: Any, models: dict[str, Path], shas: dict[str, str], keys: Path, seed: int) -> None:
        self.server, self.models, self.shas, self.keys = server, models, shas, keys
        self.port = int(server.url.rsplit(":", 1)[1])
        self.rng = random.Random(seed)
        self.wide = False  # serving the model with another feature count

    def step(self, history: History) -> None:
        started = time.monotonic()
        action = self.rng.choice(("swaps", "swaps", "sighup", "kill", "force", "scrape", "keys"))
        record: dict[str, Any] = {"t": started, "op": action}
        if action == "swaps" and not self.wide:
            targets = [self.rng.choice("ab") for _ in range(self.rng.randint(1, 3))]
            answers: list[tuple[str, int, dict[str, Any]]] = []

            def swap(name: str) -> None:
                status, body = _post(self.port, "/admin/model", {"path": str(self.models[name])}, ADMIN_KEY)
                answers.append((name, status, body))

            threads = [threading.Thread(target=swap, args=(name,)) for name in targets]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            served, _ = _served(self.server.url)
            record.update(answers=[(name, status) for name, status, _ in answers], served=sorted(served))
        elif action == "force":
            name = self.rng.choice("ab") if self.wide else "c"
            status, body = _post(self.port, "/admin/model", {"path": str(self.models[name]), "force": True}, ADMIN_KEY)
            if status == 200:
                self.wide = name == "c"
            served, _ = _served(self.server.url)
            record.update(answers=[(name, status)], served=sorted(served))
        elif action == "sighup" and not self.wide:
            os.kill(self.server.pid, signal.SIGHUP)  # the supervisor: every worker to the configured model ("a")
        elif action == "kill":
            workers = worker_processes(self.server.pid)
            if workers:
                victim = self.rng.choice(workers)
                victim.kill()
                record["pid"] = victim.pid
        elif action == "keys":
            extra = f"chaos-extra-{self.rng.randint(0, 10**6)}"
            self.keys.write_text(_keys_file(extra))
            if not self.wide:  # SIGHUP also swaps back to the configured model, which a wide model refuses
                os.kill(self.server.pid, signal.SIGHUP)
        else:
            record["op"] = "scrape"
        status, _ = http_get(self.server.url + "/metrics", timeout=10, headers=SCRAPER)
        _, total = _served(self.server.url) if status == 200 else ({}, -1.0)
        history.scrapes.append((time.monotonic(), status, total))
        record["seconds"] = round(time.monotonic() - started, 3)
        history.operations.append(record)


def _keys_file(extra: str = "") -> str:
    from server.config.keys import hash_key

    lines = [
        f"{hash_key(ADMIN_KEY)} admin ops",
        f"{hash_key(PREDICT_KEY)} predict chaos",
        f"{hash_key(METRICS_KEY)} metrics prometheus",
    ]
    if extra:
        lines.append(f"{hash_key(extra)} predict extra")
    return "\n".join(lines) + "\n"


def check(history: History, models: dict[str, Path], shas: dict[str, str], final: dict[str, float]) -> dict[str, Any]:
    """The invariants over the whole history; each violation, counted and exampled."""
    from common.model.loader import load_model

    loaded = {load_model(path).info.version: load_model(path) for path in models.values()}
    violations: dict[str, list[Any]] = {
        "5xx": [],
        "reset_outside_a_kill": [],
        "wrong_score": [],
        "unknown_version": [],
        "scrape_not_200": [],
        "counter_went_back": [],
        "swap_200_not_served": [],
        "final_not_one_model": [],
    }
    kills = [op["t"] for op in history.operations if op["op"] == "kill"]
    for reset in history.resets:
        if not any(0 <= reset - kill <= RESET_GRACE_SECONDS for kill in kills):
            violations["reset_outside_a_kill"].append(reset)
    checked_rows = 0
    by_version: dict[str, list[tuple[list[float], float]]] = {}
    for _, kind, status, version, rows, probabilities in history.answers:
        if status >= 500:
            violations["5xx"].append((kind, status))
        if status != 200:
            continue
        model = loaded.get(version)
        if model is None:
            violations["unknown_version"].append(version)
            continue
        for row, probability in zip(rows, probabilities, strict=True):
            by_version.setdefault(version, []).append(([row[name] for name in model.info.features], probability))
    for version, pairs in by_version.items():
        model = loaded[version]
        X = np.array([row for row, _ in pairs], dtype=np.float32)
        expected = model.churn_probability(X)
        got = np.array([p for _, p in pairs], dtype=np.float32)
        wrong = np.flatnonzero(got != expected)
        violations["wrong_score"] += [(version, float(got[i]), float(expected[i])) for i in wrong]
        checked_rows += len(pairs)
    previous = -1.0
    for _, status, total in history.scrapes:
        if status != 200:
            violations["scrape_not_200"].append(status)
        elif total < previous:
            violations["counter_went_back"].append((previous, total))
        previous = max(previous, total)
    for op in history.operations:
        oks = [name for name, status in op.get("answers", []) if status == 200]
        if op["op"] == "swaps" and len(op.get("answers", [])) == 1 and oks:
            if op["served"] != [shas[oks[0]]]:  # a lone swap's 200: every worker on that file when it answered
                violations["swap_200_not_served"].append(op)
    if len(final) != 1:
        violations["final_not_one_model"].append(final)
    return {
        "answers": len(history.answers),
        "rows_checked": checked_rows,
        "statuses": {
            str(s): sum(1 for a in history.answers if a[2] == s) for s in sorted({a[2] for a in history.answers})
        },
        "by_kind": {
            kind: sum(1 for a in history.answers if a[1] == kind) for kind in sorted({a[1] for a in history.answers})
        },
        "resets": len(history.resets),
        "operations": len(history.operations),
        "by_operation": {
            o: sum(1 for op in history.operations if op["op"] == o)
            for o in sorted({op["op"] for op in history.operations})
        },
        "scrapes": len(history.scrapes),
        "violations": {name: len(found) for name, found in violations.items()},
        "examples": {name: found[:3] for name, found in violations.items() if found},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = FULL if args.full else Size(seconds=args.seconds or Size.seconds)
    if args.full and args.seconds:
        size = dataclasses.replace(FULL, seconds=args.seconds)
    workdir = Path(tempfile.mkdtemp(prefix="pulse-chaos-"))
    try:
        models = _models(workdir)
        from common.model.loader import load_model

        shas = {name: load_model(path).info.sha256 for name, path in models.items()}
        keys = workdir / "keys"
        keys.write_text(_keys_file())
        port, grpc_port = free_port(), free_port()
        command = python_command("-m", "server", "--model", str(models["a"]), "--port", str(port), "--workers", "3")
        env = {
            "PULSE_GRPC_PORT": str(grpc_port),
            "PULSE_API_KEYS_FILE": str(keys),
            "PULSE_MODEL_DIR": str(workdir / "models"),
            "PULSE_LOG_LEVEL": "warning",
        }
        history = History()
        rng = random.Random(args.seed)
        schemas = [load_model(models["a"]).info.features, load_model(models["c"]).info.features]
        with run_server(command, port, workdir / "server.log", env, timeout=120) as server:
            stop = threading.Event()
            clients: list[threading.Thread] = [
                Client(port, rng.randrange(1 << 30), schemas, history, stop) for _ in range(size.clients)
            ]
            clients += [
                GrpcClient(grpc_port, rng.randrange(1 << 30), schemas, history, stop) for _ in range(size.grpc_clients)
            ]
            for client in clients:
                client.start()
            operator = Operator(server, models, shas, keys, rng.randrange(1 << 30))
            deadline = time.monotonic() + size.seconds
            while time.monotonic() < deadline:
                time.sleep(rng.expovariate(1 / size.mean_gap))
                operator.step(history)
            time.sleep(SETTLE_SECONDS)  # every live worker on one model within this
            final, _ = _served(server.url)
            stop.set()
            for client in clients:
                client.join(timeout=30)
            log_tail = server.log()[-3000:]
        outcome = check(history, models, shas, final)
        outcome.update(seed=args.seed, size=asdict(size), final_served=final, mode=os.environ.get("PULSE_HTTP", "fast"))
        if any(outcome["violations"].values()):
            outcome["server_log_tail"] = log_tail
        return outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def add_parser(commands: Any) -> None:
    """``python -m benchmarks chaos``."""
    parser = commands.add_parser(
        "chaos",
        help="operations and faults at random moments against 3 workers; invariants checked over the history",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=1, help="replays a history: operations, timing, rows")
    parser.add_argument("--seconds", type=float, default=0.0, help="length of the run (default: 40, --full 600)")
    parser.add_argument("--full", action="store_true", help="the full size: 10 minutes, 8 clients")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/chaos.json"), help="JSON record")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    outcome = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    violations = sum(outcome["violations"].values())
    print(
        f"chaos seed {outcome['seed']} ({outcome['mode']} mode): {outcome['operations']} operations "
        f"{outcome['by_operation']}, {outcome['answers']:,} answers ({outcome['rows_checked']:,} rows checked against "
        f"their model offline), statuses {outcome['statuses']}, {outcome['resets']} resets, {outcome['scrapes']} "
        f"scrapes: {violations} invariant violations {outcome['violations'] if violations else ''}"
    )
    if violations:
        print(json.dumps(outcome["examples"], indent=1, default=str)[:4000])
    return 1 if violations else 0
