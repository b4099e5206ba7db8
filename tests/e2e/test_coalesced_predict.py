"""The connection's own path of a real server process (``/predict`` and V2 infer): rows of concurrent requests
scored in one onnxruntime call, each answer on its own connection, in order, byte for byte what the ASGI path
answers, and the body budget handed back whatever becomes of a request."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from starlette.testclient import TestClient

from benchmarks.hostile import ResponseStream, read_response
from benchmarks.procs import ServerProcess, free_port, http_get, metric, python_command, run_server
from common.model.loader import load_model
from server.config.settings import Settings
from server.http.app import create_app
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    logs = tmp_path_factory.mktemp("coalesced")
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning")
    with run_server(command, port, logs / "server.log") as proc:
        yield proc


def _port(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _post(body: bytes, path: str = "/predict", extra: bytes = b"", content_type: bytes = b"application/json") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: t\r\nContent-Type: "
        + content_type
        + b"\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _rows(n: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{name: float(rng.randint(0, 60)) for name in EXAMPLE_ROW} for _ in range(n)]


def test_concurrent_requests_get_their_own_rows_score_and_a_bad_one_fails_alone(
    server: ServerProcess, exported: Path
) -> None:
    model = load_model(exported)
    features = list(model.info.features)
    clients, per_client = 16, 40
    results: dict[int, list[tuple[dict[str, float] | None, int | None, bytes]]] = {}

    def client(index: int) -> None:
        rows = _rows(per_client, seed=index)
        answers = []
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
            for i, row in enumerate(rows):
                bad = i % 7 == 3  # every seventh request is invalid: a negative count
                body = json.dumps({**row, "total_events": -1.0} if bad else row).encode()
                sock.sendall(_post(body))
                status, _, answer = read_response(sock)
                answers.append((None if bad else row, status, answer))
        results[index] = answers

    calls_before = metric(server.url, "pulse_model_compute_seconds_count")
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls = metric(server.url, "pulse_model_compute_seconds_count") - calls_before

    good = [(row, answer) for answers in results.values() for row, status, answer in answers if row is not None]
    bad = [(status, answer) for answers in results.values() for row, status, answer in answers if row is None]
    X = np.array([[row[name] for name in features] for row, _ in good], dtype=np.float32)
    expected = model.churn_probability(X)
    got = np.array([json.loads(answer)["churn_probability"] for _, answer in good], dtype=np.float32)
    assert len(good) + len(bad) == clients * per_client
    # Each answer is its own row's score, exactly: with one onnxruntime thread per worker (PULSE_ORT_THREADS=1, the
    # default) a forest's sums do not depend on how many rows share the call; with more threads they may differ in
    # the last bit between batch sizes (review L1; docs/configuration.md says so).
    np.testing.assert_array_equal(got, expected)
    assert all(status == 422 and b"total_events" in answer for status, answer in bad)
    assert calls < len(good)  # rows of concurrent requests shared onnxruntime calls


def test_requests_that_arrive_together_share_one_call(server: ServerProcess) -> None:
    """32 requests land while the worker is busy with a 1000-row batch: the next turn scores them together."""
    port, n = _port(server), 32
    batch = json.dumps(_rows(1000, seed=1)).encode()
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n + 1)]
    calls_before = metric(server.url, "pulse_model_compute_seconds_count")
    try:
        sockets[0].sendall(_post(batch))
        for sock, row in zip(sockets[1:], _rows(n, seed=2), strict=True):
            sock.sendall(_post(json.dumps(row).encode()))
        statuses = [read_response(sock)[0] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    calls = metric(server.url, "pulse_model_compute_seconds_count") - calls_before
    assert statuses == [200] * (n + 1)
    assert calls < n  # (one call for the batch, and far fewer than 32 for the singles)


INFER = "/v2/models/churn/infer"
BATCH = _rows(1000, seed=4)
FEATURES = list(EXAMPLE_ROW)  # the test model's features, in its order
TENSOR = {"name": "features", "shape": [1000, len(FEATURES)], "datatype": "FP32"}
X_BATCH = np.array([[row[name] for name in FEATURES] for row in BATCH], dtype="<f4")
BINARY_HEADER = json.dumps({"inputs": [{**TENSOR, "parameters": {"binary_data_size": X_BATCH.nbytes}}]}).encode()
BINARY = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(BINARY_HEADER))}
BINARY_BOTH_WAYS = json.dumps(
    {
        "inputs": [{**TENSOR, "parameters": {"binary_data_size": X_BATCH.nbytes}}],
        "parameters": {"binary_data_output": True},
    }
).encode()


def _v2(**tensor: object) -> bytes:
    return json.dumps({"inputs": [{**TENSOR, **tensor}]}).encode()


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/predict", json.dumps(EXAMPLE_ROW).encode(), {}),
        ("/predict", json.dumps([EXAMPLE_ROW, {**EXAMPLE_ROW, "active_days": 2}]).encode(), {}),
        ("/predict", b'{"total_events": "many"}', {}),
        ("/predict", b"[]", {}),
        ("/predict", b"{", {}),
        ("/predict", b'{"\\ud800": 1}', {}),
        ("/predict", json.dumps(BATCH).encode(), {}),
        ("/predict", json.dumps({name: [row[name] for row in BATCH] for name in FEATURES}).encode(), {}),
        (INFER, _v2(data=X_BATCH.ravel().tolist(), id="batch-1"), {}),
        (INFER, BINARY_HEADER + X_BATCH.tobytes(), BINARY),
        (
            INFER,
            BINARY_BOTH_WAYS + X_BATCH.tobytes(),
            {**BINARY, "inference-header-content-length": str(len(BINARY_BOTH_WAYS))},
        ),
        (INFER, _v2(data=X_BATCH.ravel().tolist(), datatype="FP64"), {}),
        (INFER, _v2(data=[1.0] * 5000, shape=[1001, len(FEATURES)]), {}),
        (INFER, b'{"inputs": [', {}),
        (INFER, BINARY_HEADER + X_BATCH.tobytes()[:-4], BINARY),
        (INFER, BINARY_HEADER, {**BINARY, "inference-header-content-length": "99999"}),
    ],
    ids=[
        "one row",
        "two rows",
        "wrong type",
        "empty batch",
        "malformed",
        "surrogate key",
        "1000 rows",
        "1000 rows in columns",
        "V2 JSON tensor",
        "V2 binary tensor",
        "V2 binary in and out",
        "V2 wrong datatype",
        "V2 over the batch limit",
        "V2 malformed",
        "V2 binary size mismatch",
        "V2 header length past the body",
    ],
)
def test_the_connection_answers_byte_for_byte_as_the_asgi_path(
    server: ServerProcess, exported: Path, path: str, body: bytes, headers: dict[str, str]
) -> None:
    headers = {"content-type": "application/json", **headers}
    with TestClient(create_app(Settings(model_path=exported)), raise_server_exceptions=False) as client:
        asgi = client.post(path, content=body, headers=headers)
    requests_before = metric(server.url, "pulse_http_requests_total", route=path.replace("churn", "{model_name}"))
    extra = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items() if k != "content-type")
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(_post(body, path, extra, headers["content-type"].encode()))
        status, answer_headers, answer = read_response(sock)
    assert (status, answer) == (asgi.status_code, asgi.content)
    for name in ("content-type", "inference-header-content-length"):
        assert answer_headers.get(name) == asgi.headers.get(name)
    assert "date" in answer_headers
    route = path.replace("churn", "{model_name}")
    assert metric(server.url, "pulse_http_requests_total", route=route) == requests_before + 1


def test_a_body_that_never_completes_hands_its_budget_back(exported: Path, tmp_path: Path) -> None:
    """Bodies being read are bounded per worker (PULSE_MAX_PENDING_BODY_BYTES): a second large body waits for
    room and is refused (503) while the first is half sent; once the first client leaves, the room is back."""
    body = json.dumps(BATCH).encode()
    port = free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning")
    env = {"PULSE_MAX_PENDING_BODY_BYTES": str(len(body) * 3 // 2)}
    with run_server(command, port, tmp_path / "server.log", env) as proc:
        half_sent = socket.create_connection(("127.0.0.1", port), timeout=10)
        half_sent.sendall(_post(body)[: len(body) // 2])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(_post(body))
            refused = read_response(sock)[0]
        half_sent.close()
        for _ in range(50):  # the server hears of the close in its next turn
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(_post(body))
                status = read_response(sock)[0]
            if status == 200:
                break
        assert (refused, status) == (503, 200)
        assert metric(proc.url, "pulse_http_rejected_total", reason="body_memory", status="503") >= 1


def test_bodies_whose_clients_leave_are_freed_at_once(exported: Path, tmp_path: Path) -> None:
    """Rounds of 60 clients each leaving 1 MiB of body half sent: memory stays flat (it grew ~40 MB a round while
    the abandoned bodies waited for the garbage collector)."""
    port = free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning")
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
    with run_server(command, port, tmp_path / "server.log") as proc:
        server = psutil.Process(proc.pid)
        after_each_round = []
        for _ in range(4):
            clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(60)]
            for client in clients:
                client.sendall(head + b" " * (1 << 19))
            time.sleep(1)  # the server has read what they sent
            for client in clients:
                client.close()
            time.sleep(0.5)
            after_each_round.append(server.memory_info().rss / 2**20)
        assert http_get(proc.url + "/health")[0] == 200
    assert after_each_round[-1] - after_each_round[0] < 40, after_each_round


def test_pipelined_requests_are_answered_in_order_across_both_paths(server: ServerProcess) -> None:
    one, two = (json.dumps(row).encode() for row in _rows(2, seed=3))
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(
            _post(one) + b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n" + _post(two) + _post(one, "/predict?explain=1")
        )
        stream = ResponseStream(sock)
        answers = [read_response(stream) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert json.loads(answers[1][2]) == {"status": "ok"}
    first, third, fourth = (json.loads(answers[i][2]) for i in (0, 2, 3))
    assert fourth["churn_probability"] == first["churn_probability"] and "reasons" in fourth
    assert third["churn_probability"] != first["churn_probability"]


def test_http_1_0_closes_and_a_client_that_leaves_leaves_nothing_in_flight(server: ServerProcess) -> None:
    body = json.dumps(EXAMPLE_ROW).encode()
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(_post(body).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") == "close"
        assert sock.recv(1) == b""  # closed by the server
    for _ in range(20):  # requests whose clients are gone before the answer
        with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
            sock.sendall(_post(body))
    assert metric(server.url, "pulse_http_requests_in_flight") == 0  # nothing held (a scrape is never counted)
    assert http_get(server.url + "/health")[0] == 200


def test_garbage_after_a_coalesced_request_is_refused_after_its_answer(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(_post(json.dumps(EXAMPLE_ROW).encode()) + b"NOT HTTP\r\n\r\n")
        stream = ResponseStream(sock)
        assert [read_response(stream)[0] for _ in range(2)] == [200, 400]
