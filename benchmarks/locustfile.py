"""Locust user classes, one per traffic shape. Bodies are built once, at import, from real feature rows.

The runner writes the rows to the file named by ``PULSE_BENCH_ROWS`` (a JSON list of feature objects).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import orjson
from locust import FastHttpUser, constant_throughput, events, task
from locust.env import Environment

ROWS: list[dict[str, float]] = json.loads(Path(os.environ.get("PULSE_BENCH_ROWS", "benchmarks/rows.json")).read_text())
JSON_HEADERS = {"Content-Type": "application/json"}
_rng = random.Random(7)
SINGLE_BODIES = [orjson.dumps(row) for row in ROWS[:500]]
BATCH_10 = [orjson.dumps(_rng.sample(ROWS, 10)) for _ in range(50)]
V2_BODY = orjson.dumps(
    {"inputs": [{"name": "features", "shape": [1, len(ROWS[0])], "datatype": "FP32", "data": list(ROWS[0].values())}]}
)
MAX_FAILURE_RATIO = float(os.environ.get("PULSE_BENCH_MAX_FAILURES", "0.01"))


def _post(user: FastHttpUser, path: str, body: bytes, name: str, marker: bytes) -> None:
    with user.client.post(path, data=body, headers=JSON_HEADERS, name=name, catch_response=True) as resp:  # type: ignore[arg-type]
        if resp.status_code != 200 or marker not in (resp.content or b""):
            resp.failure(f"unexpected status {resp.status_code}")


class SinglePredict(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("PULSE_BENCH_USER_RPS", "50")))

    @task
    def predict(self) -> None:
        _post(self, "/predict", _rng.choice(SINGLE_BODIES), "/predict [1]", b"churn_probability")


class BatchPredict(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("PULSE_BENCH_USER_RPS", "50")))

    @task
    def predict(self) -> None:
        _post(self, "/predict", _rng.choice(BATCH_10), "/predict [10]", b"churn_probability")


class V2Infer(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("PULSE_BENCH_USER_RPS", "50")))

    @task
    def infer(self) -> None:
        _post(self, "/v2/models/churn/infer", V2_BODY, "/v2 infer [1]", b"probabilities")


class MixedTraffic(FastHttpUser):
    """What a product sends: mostly one user at a time, some small batches, a few health checks."""

    wait_time = constant_throughput(float(os.environ.get("PULSE_BENCH_USER_RPS", "50")))

    @task(16)
    def single(self) -> None:
        _post(self, "/predict", _rng.choice(SINGLE_BODIES), "/predict [1]", b"churn_probability")

    @task(3)
    def batch(self) -> None:
        _post(self, "/predict", _rng.choice(BATCH_10), "/predict [10]", b"churn_probability")

    @task(1)
    def health(self) -> None:
        with self.client.get("/health", name="/health", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"unexpected status {resp.status_code}")


@events.quitting.add_listener
def _fail_on_budget(environment: Environment, **kwargs: object) -> None:
    """Exit code 1 when the failure ratio is over budget, so CI can act on it."""
    stats = environment.stats.total if environment.stats else None
    if stats is not None and stats.fail_ratio > MAX_FAILURE_RATIO:
        environment.process_exit_code = 1
