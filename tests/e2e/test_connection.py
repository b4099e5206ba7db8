"""HTTP/1.1 as the server's own connection speaks it, on a real process over raw sockets: pipelined requests answered
in order whichever path each takes, HEAD, chunked bodies both ways, ``Expect: 100-continue``, upgrades refused, the
date header, keep-alive, and an application that reads past the end of a body. The same suite runs in stock mode
(uvicorn), where the same HTTP must hold."""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.procs import ServerProcess, free_port, python_command, run_server
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.e2e

ROW = json.dumps(EXAMPLE_ROW).encode()
Response = tuple[int, dict[bytes, bytes], bytes]


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    logs = tmp_path_factory.mktemp("connection")
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port))
    with run_server(command, port, logs / "server.log", {"PULSE_DRAIN_SECONDS": "0"}) as proc:
        yield proc


def _port(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _post(path: bytes, body: bytes, *extra: bytes) -> bytes:
    head = b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        path,
        len(body),
    )
    return head + b"".join(field + b"\r\n" for field in extra) + b"\r\n" + body


def _exchange(server: ServerProcess, data: bytes, timeout: float = 10) -> list[Response]:
    """Send ``data`` (its last request says ``connection: close``) and parse every response until the server
    closes."""
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return _parse(received)


def _read_one(sock: socket.socket) -> Response:
    """One whole response with a Content-Length from a kept connection (its head and body may come apart)."""
    received = b""
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
        received += sock.recv(65536)
    (response,) = _parse(received)
    return response


def _length(received: bytes) -> int:
    for line in received.partition(b"\r\n\r\n")[0].lower().split(b"\r\n"):
        if line.startswith(b"content-length: "):
            return int(line.split(b": ")[1])
    return 0


def _parse(data: bytes) -> list[Response]:
    responses = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        if status == 100:
            continue
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body, data = body + data[:size], data[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            body, data = data[:length], data[length:]
        responses.append((status, headers, body))
    return responses


def test_pipelined_requests_are_answered_in_order_whichever_path_each_takes(server: ServerProcess) -> None:
    # /predict alone is the connection's own path; behind another request, or chunked, it is the application's.
    chunked = (
        b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(ROW), ROW)
    )
    data = (
        _post(b"/predict", ROW)
        + b"GET /metadata HTTP/1.1\r\nhost: x\r\n\r\n"
        + _post(b"/predict", b'{"total_events": -1}')
        + chunked
        + b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
        + _post(b"/predict", ROW, b"connection: close")
    )
    responses = _exchange(server, data)
    assert [status for status, _, _ in responses] == [200, 200, 422, 200, 200, 200]
    assert b"features" in responses[1][2] and responses[4][2] == b'{"status":"ok"}'
    assert responses[0][2] == responses[3][2] == responses[5][2]  # the same row, the same answer by every path


def test_head_has_the_length_of_get_and_no_body(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(b"HEAD /metadata HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, after = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and after == b""
    ((status, _, body),) = _exchange(server, b"GET /metadata HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert b"content-length: %d" % len(body) in head.lower() and len(body) > 0


def test_expect_100_continue_gets_continue_then_the_answer(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        head = _post(b"/predict", b"", b"expect: 100-continue").replace(b"content-length: 0", b"content-length: %d")
        sock.sendall(head.replace(b"%d", b"%d" % len(ROW)))
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(ROW)
        status, _, body = _read_one(sock)
    assert status == 200 and b"churn_probability" in body


def test_an_upgrade_is_answered_as_http_then_the_connection_closes(server: ServerProcess) -> None:
    data = (
        b"GET /metadata HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
        + b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"  # not HTTP/1.1 any more, after an upgrade: never answered
    )
    responses = _exchange(server, data)  # returns because the server closes
    assert [status for status, _, _ in responses] == [200]


def test_every_answer_carries_the_current_date(server: ServerProcess) -> None:
    for path in (b"/predict", b"/metadata"):
        request = _post(path, ROW, b"connection: close") if path == b"/predict" else b""
        request = request or b"GET /metadata HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        ((_, headers, _),) = _exchange(server, request)
        sent = email.utils.parsedate_to_datetime(headers[b"date"].decode()).timestamp()
        assert abs(sent - time.time()) < 5


def test_a_body_sent_with_a_get_is_read_and_the_file_still_served(server: ServerProcess) -> None:
    # The static-file route waits for the client to leave while it sends: a receive after the body must wait, not
    # spin (found by the reliability fuzzer).
    data = b"GET /docs/assets/swagger-ui.css HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]"
    ((status, _, body),) = _exchange(server, data)
    assert status == 200 and len(body) > 10_000
    ((status, _, _),) = _exchange(server, b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert status == 200


def test_a_kept_connection_serves_request_after_request(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(_post(b"/predict", ROW))
            status, _, body = _read_one(sock)
            assert status == 200 and b"churn_probability" in body


def test_the_access_log_has_a_line_per_answer_by_every_path(exported: Path, tmp_path: Path) -> None:
    port = free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port))
    with run_server(command, port, tmp_path / "server.log", {"PULSE_ACCESS_LOG": "true"}) as proc:
        data = (
            _post(b"/predict", ROW)  # the connection's own path
            + b"GET /metadata HTTP/1.1\r\nhost: x\r\n\r\n"  # the application's
            + b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        assert [status for status, _, _ in _exchange(proc, data)] == [200, 200, 200]
        deadline = time.monotonic() + 5
        while proc.log().count('HTTP/1.1" 200') < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        log = proc.log()
    for line in ('"POST /predict HTTP/1.1" 200', '"GET /metadata HTTP/1.1" 200', '"GET /health HTTP/1.1" 200'):
        assert line in log, log


def test_a_pipelined_request_whose_body_comes_later_is_answered(server: ServerProcess) -> None:
    # Behind another request, the connection stops reading; once that one is answered it must read this one's body.
    second = _post(b"/predict", ROW, b"connection: close")
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(b"GET /metadata HTTP/1.1\r\nhost: x\r\n\r\n" + second[:-10])
        time.sleep(0.3)
        sock.sendall(second[-10:])
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert [status for status, _, _ in _parse(received)] == [200, 200]
