"""Safe operation on real server processes: model swaps under load on every worker (HTTP and SIGHUP), API keys on
the coalesced path, and TLS."""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from benchmarks.procs import (
    ServerProcess,
    free_port,
    http_get,
    python_command,
    run_server,
    self_signed_certificate,
    stop,
    worker_processes,
)
from common.model.loader import Model, load_model
from server.config.keys import hash_key
from tests.support import EXAMPLE_ROW, FAST_MODE, require_tool

pytestmark = pytest.mark.e2e

ADMIN_KEY, PREDICT_KEY = "pk_admin_e2e", "pk_predict_e2e"
SCRAPE = {"authorization": f"Bearer {ADMIN_KEY}"}  # /metrics needs a metrics (or admin) key with keys on


def _copy_model(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target.with_suffix(".tmp"))
    os.replace(target.with_suffix(".tmp"), target)  # atomic, as a deploy tool would put a new file in place
    shutil.copy(source.with_name("model.onnx.sha256"), target.with_name("model.onnx.sha256"))
    return target


@pytest.fixture(scope="module")
def two_workers(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("swap")
    keys = folder / "keys"
    keys.write_text(f"{hash_key(ADMIN_KEY)} admin ops\n{hash_key(PREDICT_KEY)} predict crm\n")
    model_path = _copy_model(exported, folder / "serving" / "model.onnx")
    port = free_port()
    command = python_command("-m", "server", "--model", str(model_path), "--port", str(port), "--workers", "2")
    env = {
        "PULSE_API_KEYS_FILE": str(keys),
        "PULSE_LOG_LEVEL": "warning",
        "PULSE_MODEL_DIR": str(tmp_path_factory.getbasetemp()),  # every model fixture of this run lives under it
    }
    with run_server(command, port, folder / "server.log", env, timeout=60) as server:
        _wait_for_workers(server, 2)
        yield server, model_path


def _wait_for_workers(server: ServerProcess, n: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = http_get(server.url + "/metrics", headers=SCRAPE)[1].decode()
        if f"pulse_workers {n}.0" in text:
            return
        time.sleep(0.2)
    raise AssertionError(f"{n} workers never reported")


def _post(port: int, path: str, body: object, key: str) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", path, json.dumps(body), {"content-type": "application/json", "authorization": f"Bearer {key}"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _served_versions(server: ServerProcess) -> dict[str, float]:
    text = http_get(server.url + "/metrics", headers=SCRAPE)[1].decode()
    return {
        line.split('version="')[1].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("pulse_model_info{")
    }


def test_twenty_swaps_under_load_lose_nothing_and_every_answer_names_its_model(
    two_workers: tuple[ServerProcess, Path], exported: Path, twin_model: Path
) -> None:
    server, _ = two_workers
    port = int(server.url.rsplit(":", 1)[1])
    models: dict[str, Model] = {m.info.version: m for m in (load_model(exported), load_model(twin_model))}
    features = next(iter(models.values())).info.features
    answers: list[tuple[list[float], int, dict[str, object]]] = []
    stop_clients = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"content-type": "application/json", "authorization": f"Bearer {PREDICT_KEY}"}
        while not stop_clients.is_set():
            row = {name: float(rng.randint(0, 40)) for name in EXAMPLE_ROW}
            connection.request("POST", "/predict", json.dumps(row), headers)
            response = connection.getresponse()
            answers.append(([row[name] for name in features], response.status, json.loads(response.read())))
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    swaps, swap_seconds = [], []
    started = time.monotonic()
    try:
        for i in range(20):
            target = twin_model if i % 2 == 0 else exported
            began = time.monotonic()
            status, result = _post(port, "/admin/model", {"path": str(target)}, ADMIN_KEY)
            swap_seconds.append(time.monotonic() - began)
            swaps.append((status, result))
            time.sleep(0.1)
    finally:
        stop_clients.set()
        for thread in threads:
            thread.join()
    print(
        f"20 swaps on 2 workers in {time.monotonic() - started:.1f} s (each answered after both workers switched: "
        f"median {1000 * sorted(swap_seconds)[10]:.0f} ms, max {1000 * max(swap_seconds):.0f} ms); "
        f"{len(answers)} /predict answers from 8 clients, statuses {sorted({s for _, s, _ in answers})}"
    )

    assert [status for status, _ in swaps] == [200] * 20, swaps
    for _, result in swaps:  # each swap answered once every worker served the new model
        assert set(result["workers"].values()) == {result["model_version"]}, result  # type: ignore[union-attr]
        assert len(result["workers"]) == 2  # type: ignore[arg-type]
    assert len(answers) > 200 and {status for _, status, _ in answers} == {200}
    named = {str(body["model_version"]) for _, _, body in answers}
    assert named == set(models)  # both models answered during the run
    for version, model in models.items():
        rows = [row for row, _, body in answers if body["model_version"] == version]
        got = np.array([body["churn_probability"] for _, _, body in answers if body["model_version"] == version])
        np.testing.assert_array_equal(got.astype(np.float32), model.churn_probability(np.array(rows, np.float32)))
    assert _served_versions(server) == {next(iter(models)): 2.0}  # the last swap went back to the first model


def test_sighup_swaps_every_worker_to_the_file_now_at_the_model_path(
    two_workers: tuple[ServerProcess, Path], exported: Path, twin_model: Path
) -> None:
    server, model_path = two_workers
    _post(int(server.url.rsplit(":", 1)[1]), "/admin/model", {"path": str(model_path)}, ADMIN_KEY)
    original = load_model(model_path).info.version
    _copy_model(twin_model, model_path)
    twin = load_model(twin_model).info.version
    assert twin != original
    os.kill(server.pid, signal.SIGHUP)  # to the supervisor
    deadline = time.monotonic() + 20
    while _served_versions(server) != {twin: 2.0} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _served_versions(server) == {twin: 2.0}
    assert (
        server.process.poll() is None
        and "pulse_workers 2.0" in http_get(server.url + "/metrics", headers=SCRAPE)[1].decode()
    )
    _copy_model(exported, model_path)


def _served_sha256(server: ServerProcess) -> dict[str, float]:
    text = http_get(server.url + "/metrics", headers=SCRAPE)[1].decode()
    return {
        line.split('sha256="')[1].split('"')[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("pulse_model_info{")
    }


def _same_version_other_bytes(source: Path, target: Path) -> Path:
    """``source`` with one more metadata entry: the same model version string, another file (another sha256)."""
    import onnx

    model = onnx.load(str(source))
    model.metadata_props.add(key="note", value="the same version, other bytes")
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def _sha256(path: Path) -> str:
    return load_model(path).info.sha256


def test_a_swap_answers_200_only_once_every_worker_serves_that_exact_file(
    two_workers: tuple[ServerProcess, Path], exported: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Versions are per-second timestamps and collide; a 200 compares the file's sha256 on every worker."""
    server, _ = two_workers
    port = int(server.url.rsplit(":", 1)[1])
    variant = _same_version_other_bytes(exported, tmp_path_factory.mktemp("variant") / "model.onnx")
    assert load_model(variant).info.version == load_model(exported).info.version
    for target in (variant, exported, variant, exported):
        status, result = _post(port, "/admin/model", {"path": str(target)}, ADMIN_KEY)
        assert status == 200, result
        assert _served_sha256(server) == {_sha256(target): 2.0}  # at the moment of the 200, on every worker


def test_swaps_asked_at_once_on_two_workers_end_on_one_model(
    two_workers: tuple[ServerProcess, Path], exported: Path, twin_model: Path
) -> None:
    """Two admins swapping to different models at the same moment: each answer is 200 (served everywhere before
    the other came) or 409 (superseded), and every worker ends on the same model, one a 200 named."""
    server, _ = two_workers
    port = int(server.url.rsplit(":", 1)[1])
    shas = {str(exported): _sha256(exported), str(twin_model): _sha256(twin_model)}
    for _ in range(4):
        answers: dict[str, tuple[int, dict[str, object]]] = {}

        def swap(path: str, answers: dict[str, tuple[int, dict[str, object]]] = answers) -> None:
            answers[path] = _post(port, "/admin/model", {"path": path}, ADMIN_KEY)

        threads = [threading.Thread(target=swap, args=(path,)) for path in shas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert {status for status, _ in answers.values()} <= {200, 409}, answers
        deadline = time.monotonic() + 2
        while len(_served_sha256(server)) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        (served, workers), *others = _served_sha256(server).items()
        assert not others and workers == 2.0
        assert any(status == 200 and shas[path] == served for path, (status, _) in answers.items()), answers
    _post(port, "/admin/model", {"path": str(exported)}, ADMIN_KEY)


def test_a_restarted_worker_comes_up_on_the_model_the_cluster_serves(
    two_workers: tuple[ServerProcess, Path], exported: Path, twin_model: Path
) -> None:
    server, _ = two_workers
    port = int(server.url.rsplit(":", 1)[1])
    assert _post(port, "/admin/model", {"path": str(twin_model)}, ADMIN_KEY)[0] == 200
    workers = worker_processes(server.pid)
    assert len(workers) == 2
    workers[0].kill()  # the supervisor starts a new worker in its place
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = {child.pid for child in worker_processes(server.pid)}
        if len(alive) == 2 and workers[0].pid not in alive and _served_sha256(server) == {_sha256(twin_model): 2.0}:
            break
        time.sleep(0.2)
    assert _served_sha256(server) == {_sha256(twin_model): 2.0}  # not the configured model the new worker was given
    assert _post(port, "/admin/model", {"path": str(exported)}, ADMIN_KEY)[0] == 200


def test_a_websocket_upgrade_is_answered_as_plain_http(two_workers: tuple[ServerProcess, Path]) -> None:
    """With a WebSocket library installed, uvicorn would hand the upgrade to it, and the connection then held a
    slot unanswered; the server has no WebSocket route and answers the request as HTTP at once."""
    server, _ = two_workers
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(
            b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_the_overload_answer_comes_before_the_body(exported: Path, tmp_path: Path) -> None:
    """PULSE_MAX_IN_FLIGHT=1 with one request holding it: the next gets its 503 at once, body unsent (a client
    waiting for 100-continue would otherwise wait for good)."""
    port = free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port))
    env = {"PULSE_MAX_IN_FLIGHT": "1", "PULSE_LOG_LEVEL": "warning"}
    with run_server(command, port, tmp_path / "server.log", env) as server:
        held = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"transfer-encoding: chunked\r\n\r\n5\r\n{\"tot\r\n")  # fmt: skip
        time.sleep(0.5)  # the held request is in flight, waiting for the rest of its body
        with socket.create_connection(("127.0.0.1", port), timeout=5) as waiting:
            waiting.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                            b"content-length: 100\r\nexpect: 100-continue\r\n\r\n")  # fmt: skip
            answer = waiting.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer, answer
        assert http_get(server.url + "/health")[0] == 200  # probes are never shed
        held.close()


def test_keys_guard_the_coalesced_path_too(two_workers: tuple[ServerProcess, Path]) -> None:
    server, _ = two_workers
    port = int(server.url.rsplit(":", 1)[1])
    assert _post(port, "/predict", EXAMPLE_ROW, PREDICT_KEY)[0] == 200
    status, body = _post(port, "/predict", EXAMPLE_ROW, "wrong")
    assert status == 401 and "API key" in str(body["detail"])


def test_tls_serves_https_with_a_self_signed_certificate(exported: Path, tmp_path: Path) -> None:
    require_tool("openssl", "apt-get install openssl")
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    env = {**os.environ, "PULSE_TLS_CERT": str(cert), "PULSE_TLS_KEY": str(key)}
    process = subprocess.Popen(
        python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = ssl.create_default_context(cafile=str(cert))

    def https() -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)

    try:
        deadline = time.monotonic() + 30
        while not _answers_ready(https()):
            assert time.monotonic() < deadline, "the TLS server never became ready"
            time.sleep(0.2)
        with closing(https()) as connection:
            connection.request("POST", "/predict", json.dumps(EXAMPLE_ROW), {"content-type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200 and "churn_probability" in json.loads(response.read())
            if FAST_MODE:  # the fast mode's connection limits hold over TLS too (stock mode has none)
                connection.request("GET", "/health", headers={"x-big": "a" * 40_000})
                assert connection.getresponse().status == 431
        # The image's HEALTHCHECK probes over https when TLS is on (plain http to a TLS port fails).
        probe = [*python_command("-m", "server.ops.healthcheck")]
        for tls, code in (({"PULSE_TLS_CERT": str(cert)}, 0), ({"PULSE_TLS_CERT": ""}, 1)):
            probe_env = {**os.environ, "PULSE_PORT": str(port), **tls}
            assert subprocess.run(probe, env=probe_env, timeout=30).returncode == code
        with closing(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) as plain:
            with pytest.raises((http.client.HTTPException, OSError)):
                plain.request("GET", "/health")
                plain.getresponse()
    finally:
        stop(process)


def _answers_ready(connection: http.client.HTTPSConnection) -> bool:
    with closing(connection):
        try:
            connection.request("GET", "/ready")
            return connection.getresponse().status == 200
        except OSError:
            return False


def test_a_lone_tls_file_or_a_bad_keys_file_stops_start_up_with_one_line(exported: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sha256:nothex predict\n")
    for env, fragment in (
        ({"PULSE_TLS_CERT": str(exported)}, "PULSE_TLS_CERT and PULSE_TLS_KEY go together"),
        ({"PULSE_API_KEYS_FILE": str(keys)}, "line 1: expected 'sha256:"),
    ):
        run = subprocess.run(
            python_command("-m", "server", "--model", str(exported), "--port", str(free_port())),
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and fragment in lines[0], run.stderr


def test_a_restarted_worker_loads_the_verified_model_not_the_file_now_at_the_path(
    exported: Path, twin_model: Path, tmp_path: Path
) -> None:
    """Review M2: a worker the supervisor restarted loaded whatever file was at the model path by then."""
    model_path = _copy_model(exported, tmp_path / "serving" / "model.onnx")
    port = free_port()
    command = python_command("-m", "server", "--model", str(model_path), "--port", str(port), "--workers", "2")
    with run_server(command, port, tmp_path / "server.log", {"PULSE_LOG_LEVEL": "warning"}, timeout=60) as server:
        _wait_for_workers(server, 2)
        _copy_model(twin_model, model_path)  # a new export over the served file, its sidecar too; no swap asked
        workers = worker_processes(server.pid)
        workers[0].kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alive = {child.pid for child in worker_processes(server.pid)}
            if len(alive) == 2 and workers[0].pid not in alive and sum(_served_sha256(server).values()) == 2.0:
                break
            time.sleep(0.2)
        assert _served_sha256(server) == {_sha256(exported): 2.0}
