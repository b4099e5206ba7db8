"""The coalesced ``/predict`` path of a real server process: rows of concurrent requests scored in one
onnxruntime call, each answer on its own connection, in order, byte for byte what the ASGI path answers."""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from benchmarks.hostile import ResponseStream, read_response
from benchmarks.procs import ServerProcess, free_port, http_get, metric, python_command, run_server
from server.app import create_app
from server.model import load_model
from server.settings import Settings
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


def _post(body: bytes, path: str = "/predict", extra: bytes = b"") -> bytes:
    return (
        b"POST "
        + path.encode()
        + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
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
    np.testing.assert_array_equal(got, expected)  # each answer is its own row's score, exactly
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


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(EXAMPLE_ROW).encode(),
        json.dumps([EXAMPLE_ROW, {**EXAMPLE_ROW, "active_days": 2}]).encode(),
        b'{"total_events": "many"}',
        b"[]",
        b"{",
        b'{"\\ud800": 1}',
    ],
    ids=["one row", "two rows", "wrong type", "empty batch", "malformed", "surrogate key"],
)
def test_the_coalesced_path_answers_byte_for_byte_as_the_asgi_path(
    server: ServerProcess, exported: Path, body: bytes
) -> None:
    with TestClient(create_app(Settings(model_path=exported)), raise_server_exceptions=False) as client:
        asgi = client.post("/predict", content=body, headers={"content-type": "application/json"})
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(_post(body))
        status, headers, answer = read_response(sock)
    assert (status, answer) == (asgi.status_code, asgi.content)
    assert headers["content-type"] == "application/json" and "date" in headers


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
    assert metric(server.url, "pulse_http_requests_in_flight") == 1  # the scrape itself
    assert http_get(server.url + "/health")[0] == 200


def test_garbage_after_a_coalesced_request_is_refused_after_its_answer(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(_post(json.dumps(EXAMPLE_ROW).encode()) + b"NOT HTTP\r\n\r\n")
        stream = ResponseStream(sock)
        assert [read_response(stream)[0] for _ in range(2)] == [200, 400]
