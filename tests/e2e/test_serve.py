"""A real uvicorn process on loopback: predictions, SIGTERM draining, start-up failures."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.procs import ServerProcess, free_port, http_get, http_post_json, python_command, run_server
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    logs = tmp_path_factory.mktemp("serve")
    env = {"PULSE_REQUEST_LOG": str(logs / "requests.jsonl"), "PULSE_DRAIN_SECONDS": "0"}
    with run_server(
        python_command("-m", "server", "--model", str(exported), "--port", str(port)), port, logs / "server.log", env
    ) as proc:
        yield proc


def test_uvicorn_process_answers_like_sklearn(server: ServerProcess, exported: Path) -> None:
    golden = json.loads((exported.parent / "golden_rows.json").read_text())
    rows = [dict(zip(golden["features"], row, strict=True)) for row in golden["inputs"]]
    status, body = http_post_json(server.url + "/predict", json.dumps(rows).encode())
    assert status == 200
    got = [r["churn_probability"] for r in json.loads(body)]
    assert got == pytest.approx(golden["probabilities"], abs=1e-6)
    assert http_get(server.url + "/health") == (200, b'{"status":"ok"}')
    assert server.ready_seconds < 10


@pytest.mark.parametrize(("method", "path"), [("GET", "/health"), ("GET", "/nope"), ("POST", "/predict")])
def test_the_real_server_does_not_name_its_software(server: ServerProcess, method: str, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=5)
    connection.request(
        method, path, body=b"{" if method == "POST" else None, headers={"content-type": "application/json"}
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status in (200, 400, 404)
    assert response.getheader("server") is None
    assert response.getheader("date") is not None  # uvicorn's own headers are there, so the check is meaningful


def test_request_log_is_written_by_the_real_server(server: ServerProcess) -> None:
    row = EXAMPLE_ROW
    assert http_post_json(server.url + "/predict", json.dumps(row).encode())[0] == 200
    log = server.log_path.parent / "requests.jsonl"
    deadline = time.time() + 5
    while time.time() < deadline and (not log.exists() or '"total_events":12.0' not in log.read_text()):
        time.sleep(0.05)
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["total_events"] == 12.0 and 0 <= last["churn_probability"] <= 1


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_signal_drains_then_exits_0(exported: Path, tmp_path: Path, stop: signal.Signals) -> None:
    """SIGTERM (Kubernetes) and SIGINT (Ctrl-C in a terminal) drain alike and end in status 0, with no traceback."""
    port = free_port()
    row = json.dumps(EXAMPLE_ROW)
    with run_server(
        python_command("-m", "server", "--model", str(exported), "--port", str(port)),
        port,
        tmp_path / "server.log",
        {"PULSE_DRAIN_SECONDS": "1.5"},
    ) as proc:
        idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # a keep-alive connection
        idle.request("GET", "/health")
        assert idle.getresponse().read() == b'{"status":"ok"}'
        proc.process.send_signal(stop)
        _wait_for_log(
            proc, f"{stop.name} received: not ready, draining for 1.5s"
        )  # the signal handler has run: readiness is off
        assert http_get(proc.url + "/ready")[0] == 503
        idle.request("POST", "/predict", body=row, headers={"content-type": "application/json"})
        response = idle.getresponse()
        assert response.status == 200 and response.getheader("connection") == "close"
        response.read()
        # A drain asked for and done is a clean exit: status 0, after the application's shutdown completed.
        assert proc.process.wait(timeout=10) == 0
    log = proc.log()
    assert "shutdown complete" in log and "Traceback" not in log and "KeyboardInterrupt" not in log, log


def _wait_for_log(proc: ServerProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.log():
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s: {proc.log()[-2000:]}"
        time.sleep(0.02)


def _start_failure(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(b"garbage"), "has sha256"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "has sha256"),
        (lambda p: (p.with_name("model.onnx.sha256").unlink(), p.write_bytes(b"garbage")), "not a loadable ONNX"),
        (lambda p: p.unlink(), "does not exist"),
    ],
)
def test_a_bad_model_stops_start_up_with_one_line(exported: Path, tmp_path: Path, damage: Any, message: str) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(exported, model)
    shutil.copy(exported.with_name("model.onnx.sha256"), tmp_path / "model.onnx.sha256")
    damage(model)
    result = _start_failure(["--model", str(model), "--port", str(free_port())])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize(
    ("env", "start"),
    [
        ({"PULSE_MAX_BATCH": "lots"}, "error: PULSE_MAX_BATCH has value 'lots': "),
        ({"PULSE_DRAIN_SECONDS": "inf"}, "error: PULSE_DRAIN_SECONDS has value 'inf': not a finite number"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(exported: Path, env: dict[str, str], start: str) -> None:
    result = _start_failure(["--model", str(exported)], env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr
