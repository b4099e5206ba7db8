"""Build the real image, run it, and check what a user and a platform engineer rely on.

The engine is the one ``docker info`` finds (honouring ``DOCKER_HOST``). Only when there is none, and the
workplace's ``../shared/docker`` scripts exist (as on CI), the test starts an engine with them (and a local
Python base image, since that engine reaches no registry) and stops it afterwards. With neither it skips, saying
why; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.procs import free_port, http_get, http_post_json, python_command

pytestmark = [pytest.mark.e2e, pytest.mark.container]

ROOT = Path(__file__).resolve().parents[2]
DOCKER_SCRIPTS = ROOT.parent / "shared" / "docker"
SHARED_SOCKET = Path("/tmp/dockerd/docker.sock")
SHARED_BASE_IMAGE = "local/python:3.11-slim"
IMAGE = "ml-pulsechecker:test"


@dataclass(frozen=True)
class Engine:
    env: dict[str, str] = field(default_factory=dict)  # DOCKER_HOST for the engine started here
    build_args: tuple[str, ...] = ()


ENGINE = Engine()


def _docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENGINE.env}
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, env=env)


def _engine_answers(env: dict[str, str]) -> bool:
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, env={**os.environ, **env})
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"no Docker engine for the container tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    global ENGINE
    if _engine_answers({}):
        ENGINE = Engine()  # the user's own engine: used as it is, never stopped
        yield ENGINE
        return
    if not DOCKER_SCRIPTS.is_dir():
        _unavailable("`docker info` finds no engine, and there are no ../shared/docker scripts to start one")
    shared = {"DOCKER_HOST": f"unix://{SHARED_SOCKET}"}
    started_here = not _engine_answers(shared)
    subprocess.run(["bash", str(DOCKER_SCRIPTS / "engine.sh"), "start"], check=True, capture_output=True, timeout=600)
    subprocess.run(["bash", str(DOCKER_SCRIPTS / "base-image.sh")], check=True, capture_output=True, timeout=900)
    ENGINE = Engine(shared, ("--build-arg", f"PYTHON_IMAGE={SHARED_BASE_IMAGE}"))
    yield ENGINE
    if started_here:
        subprocess.run(["bash", str(DOCKER_SCRIPTS / "engine.sh"), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    started = time.perf_counter()
    _docker("build", "--network=host", *engine.build_args, "-t", IMAGE, str(ROOT), timeout=1800)
    size = int(_docker("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip())
    print(f"\nimage {IMAGE}: {size / 1e6:.0f} MB, built in {time.perf_counter() - started:.0f}s")
    return IMAGE


@pytest.fixture
def container(image: str, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    port, grpc_port = free_port(), free_port()
    environment = ("-e", f"PULSE_PORT={port}", "-e", f"PULSE_GRPC_PORT={grpc_port}")
    cid = _docker("run", "-d", "--network=host", "--read-only", *environment, image).stdout.strip()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        yield cid, url, grpc_port
    finally:
        _docker("rm", "-f", cid, check=False)


def _wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http_get(url + "/ready", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def test_image_serves_like_the_model_it_carries(container: tuple[str, str, int], tmp_path: Path) -> None:
    cid, url, grpc_port = container
    assert http_get(url + "/health") == (200, b'{"status":"ok"}')
    _docker("cp", f"{cid}:/models/model.onnx", str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    features = json.loads(meta["features"])
    row = dict(zip(features, json.loads(meta["golden_rows"])["inputs"][0], strict=True))
    expected = session.run(["probabilities"], {"features": np.array([[row[f] for f in features]], np.float32)})[0]
    status, body = http_post_json(url + "/predict", json.dumps(row).encode())
    assert status == 200
    answer = json.loads(body)
    assert answer["churn_probability"] == pytest.approx(float(expected[0, 1]), abs=1e-7)
    assert answer["threshold"] == float(meta["threshold"])
    # The image's gRPC door, through NVIDIA's client (a process of its own: see benchmarks.oip_clients).
    np.save(tmp_path / "row.npy", np.array([[row[f] for f in features]], np.float32))
    command = python_command(
        "-m", "benchmarks.oip_clients", "triton-grpc", "--http", url.removeprefix("http://"),
        "--grpc", f"127.0.0.1:{grpc_port}", "--rows", str(tmp_path / "row.npy"),
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    probabilities = json.loads(done.stdout)["infer"]["value"]["probabilities"]
    assert probabilities[0][1] == pytest.approx(float(expected[0, 1]), abs=1e-7)


def test_image_has_no_training_stack_and_runs_as_non_root(container: tuple[str, str, int]) -> None:
    cid, _, _ = container
    for module in ("sklearn", "pandas", "scipy", "shap", "evidently"):
        result = _docker("exec", cid, "python", "-c", f"import {module}", check=False)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, module
    assert _docker("exec", cid, "id", "-u").stdout.strip() != "0"
    assert _docker("exec", cid, "sh", "-c", "command -v gcc || command -v curl || true").stdout.strip() == ""


def test_healthcheck_reports_healthy(container: tuple[str, str, int]) -> None:
    cid, _, _ = container
    deadline = time.time() + 40
    status = ""
    while time.time() < deadline:
        status = _docker("inspect", "--format", "{{.State.Health.Status}}", cid).stdout.strip()
        if status == "healthy":
            break
        time.sleep(1)
    assert status == "healthy"


def test_a_mounted_model_replaces_the_baked_one(image: str, exported: Path) -> None:
    port = free_port()
    cid = _docker(
        "run", "-d", "--network=host", "-e", f"PULSE_PORT={port}", "-v", f"{exported.parent}:/models:ro", image
    ).stdout.strip()
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url)
        sha = (exported.parent / "model.onnx.sha256").read_text().split()[0]
        assert json.loads(http_get(url + "/metadata")[1])["sha256"] == sha
    finally:
        _docker("rm", "-f", cid, check=False)
