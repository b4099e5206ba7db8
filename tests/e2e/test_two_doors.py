"""One pipeline behind both doors: the same raw requests sent to a real fast-mode server (the connection answers
``/predict`` and V2 infer itself) and a real stock-mode one (uvicorn's own protocol, every request through ASGI) get
byte-equal answers (less the ``date`` header), write the same request-log lines and move the same counters."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.procs import ServerProcess, free_port, http_get, python_command, run_server
from server.config.keys import hash_key
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.e2e

PREDICT_KEY, ADMIN_KEY = "pk-" + "p" * 40, "ak-" + "a" * 40
ROW = json.dumps(EXAMPLE_ROW).encode()
BATCH = json.dumps([EXAMPLE_ROW, {**EXAMPLE_ROW, "active_days": 1}, {**EXAMPLE_ROW, "total_events": 90}]).encode()
INFER = "/v2/models/churn/infer"
TENSOR = {"name": "features", "datatype": "FP32", "shape": [2, 5], "data": [12, 3, 4, 1, 3, 90, 3, 4, 1, 1]}


def _v2_binary(outputs: bool) -> tuple[bytes, int]:
    """A V2 request whose tensor travels as raw little-endian floats after the JSON part."""
    values = struct.pack("<10f", *TENSOR["data"])
    tensor = {**TENSOR, "parameters": {"binary_data_size": len(values)}}
    del tensor["data"]
    header: dict[str, object] = {"inputs": [tensor]}
    if outputs:
        header["parameters"] = {"binary_data_output": True}
    part = json.dumps(header).encode()
    return part + values, len(part)


def _request(
    path: str,
    body: bytes | None = None,
    method: str = "POST",
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),),
    key: str | None = PREDICT_KEY,
    chunked: bool = False,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", "connection: close"]
    if key is not None:
        lines.append(f"authorization: Bearer {key}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body is None:
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
    if chunked:
        lines.append("transfer-encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


BINARY_IN, BINARY_IN_LENGTH = _v2_binary(outputs=False)
BINARY_OUT, BINARY_OUT_LENGTH = _v2_binary(outputs=True)
OCTETS = (("content-type", "application/octet-stream"),)

# Every case the pipeline decides: valid and invalid bodies, the headers it reads, each auth case, explain, V2.
TABLE: dict[str, bytes] = {
    "one row": _request("/predict", ROW),
    "a batch": _request("/predict", BATCH),
    "a batch, chunked": _request("/predict", BATCH, chunked=True),
    "explain": _request("/predict?explain=2", BATCH),
    "explain, not a number": _request("/predict?explain=%C2%B2", ROW),
    "explain, 5000 digits": _request("/predict?explain=" + "9" * 5000, ROW),
    "malformed JSON": _request("/predict", b'{"total_events": 12,'),
    "a missing field": _request("/predict", json.dumps({"total_events": 1}).encode()),
    "a negative count": _request("/predict", json.dumps({**EXAMPLE_ROW, "total_events": -1}).encode()),
    "an empty batch": _request("/predict", b"[]"),
    "text/plain": _request("/predict", ROW, headers=(("content-type", "text/plain"),)),
    "JSON with a charset": _request("/predict", ROW, headers=(("content-type", "application/json; charset=utf-8"),)),
    "two content types": _request(
        "/predict", ROW, headers=(("content-type", "application/json"), ("content-type", "application/json"))
    ),
    "gzip-encoded": _request(
        "/predict", ROW, headers=(("content-type", "application/json"), ("content-encoding", "gzip"))
    ),
    "over the body limit": _request("/predict", b" " * 5000 + ROW),
    "no key": _request("/predict", ROW, key=None),
    "a wrong key": _request("/predict", ROW, key="nope"),
    "the admin key": _request("/predict", ROW, key=ADMIN_KEY),
    "two authorization headers": _request(
        "/predict", ROW, headers=(("content-type", "application/json"), ("authorization", f"Bearer {ADMIN_KEY}"))
    ),
    "V2 JSON": _request(INFER, json.dumps({"inputs": [TENSOR]}).encode()),
    "V2 JSON, a wrong shape": _request(INFER, json.dumps({"inputs": [{**TENSOR, "shape": [2, 4]}]}).encode()),
    "V2 JSON, no key": _request(INFER, json.dumps({"inputs": [TENSOR]}).encode(), key=None),
    "V2 JSON, malformed": _request(INFER, b'{"inputs": ['),
    "V2 binary in": _request(
        INFER, BINARY_IN, headers=(*OCTETS, ("inference-header-content-length", str(BINARY_IN_LENGTH)))
    ),
    "V2 binary in and out": _request(
        INFER, BINARY_OUT, headers=(*OCTETS, ("inference-header-content-length", str(BINARY_OUT_LENGTH)))
    ),
    "V2 binary, a length past the body": _request(
        INFER, BINARY_IN, headers=(*OCTETS, ("inference-header-content-length", "99999"))
    ),
    "V2 binary, no JSON length": _request(INFER, BINARY_IN, headers=OCTETS),
    "V2 another model": _request("/v2/models/other/infer", json.dumps({"inputs": [TENSOR]}).encode()),
    "GET /predict": _request("/predict", method="GET"),
    "health": _request("/health", method="GET", key=None),
    "ready": _request("/ready", method="GET", key=None),
    "V2 live": _request("/v2/health/live", method="GET", key=None),
    "V2 ready": _request("/v2/health/ready", method="GET", key=None),
    "HEAD /health": _request("/health", method="HEAD", key=None),
    "health with a query": _request("/health?verbose=1", method="GET", key=None),
    "V2 model config": _request("/v2/models/churn/config", method="GET"),
    "V2 infer, no content type": _request(INFER, json.dumps({"inputs": [TENSOR]}).encode(), headers=()),
    "V2 binary, trailing whitespace after the JSON length": _request(
        INFER, BINARY_IN, headers=(*OCTETS, ("inference-header-content-length", f"{BINARY_IN_LENGTH} \t"))
    ),
    "V2 another version": _request("/v2/models/churn/versions/nope/infer", json.dumps({"inputs": [TENSOR]}).encode()),
}


def _exchange(port: int, raw: bytes) -> bytes:
    """The whole answer to ``raw`` on a fresh connection (the request asks the server to close it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*", b"", answer, count=1)


COUNTED = re.compile(r"^(pulse_\w+(?:_total|_count)|pulse_drift_window_rows|pulse_predicted_rows_total)[{ ]")


def _counters(server: ServerProcess) -> dict[str, str]:
    """The counters the requests moved (totals and call counts; not durations, gauges of the moment or uptime)."""
    text = http_get(server.url + "/metrics", timeout=5, headers={"authorization": f"Bearer {ADMIN_KEY}"})[1].decode()
    samples = {}
    for line in text.splitlines():
        if COUNTED.match(line) and "/metrics" not in line:
            name, value = line.rsplit(" ", 1)
            name = re.sub(r'pid="\d+"', 'pid=""', name)  # one worker each, its own pid
            samples[name] = value
    return samples


@pytest.fixture(scope="module")
def two_doors(
    exported: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[ServerProcess, Path]]]:
    folder = tmp_path_factory.mktemp("doors")
    keys = folder / "keys"
    keys.write_text(f"{hash_key(ADMIN_KEY)} admin ops\n{hash_key(PREDICT_KEY)} predict crm\n")
    servers: dict[str, tuple[ServerProcess, Path]] = {}
    with _serve(exported, folder, keys, "fast") as fast, _serve(exported, folder, keys, "stock") as stock:
        servers["fast"], servers["stock"] = fast, stock
        yield servers


@contextmanager
def _serve(exported: Path, folder: Path, keys: Path, mode: str) -> Iterator[tuple[ServerProcess, Path]]:
    port = free_port()
    log = folder / f"requests-{mode}.jsonl"
    env = {
        "PULSE_HTTP": mode,
        "PULSE_API_KEYS_FILE": str(keys),
        "PULSE_REQUEST_LOG": str(log),
        "PULSE_MAX_BODY_BYTES": "4096",
        "PULSE_LOG_LEVEL": "warning",
    }
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port))
    with run_server(command, port, folder / f"server-{mode}.log", env) as server:
        yield server, log


def _written(path: Path) -> list[dict[str, object]]:
    """The request log's lines (less their time) once its writer thread has caught up."""
    deadline, seen = time.monotonic() + 10, -1
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size == seen:
            break
        seen = size
        time.sleep(0.3)
    return [{k: v for k, v in json.loads(line).items() if k != "ts"} for line in path.read_text().splitlines()]


def test_both_doors_answer_alike_and_count_alike(two_doors: dict[str, tuple[ServerProcess, Path]]) -> None:
    answers: dict[str, dict[str, bytes]] = {}
    for mode, (server, _) in two_doors.items():
        port = int(server.url.rsplit(":", 1)[1])
        answers[mode] = {case: _without_date(_exchange(port, raw)) for case, raw in TABLE.items()}
    for case in TABLE:
        assert answers["fast"][case] == answers["stock"][case], case
    statuses = {case: int(answer.split(b" ", 2)[1]) for case, answer in answers["fast"].items()}
    assert statuses["one row"] == statuses["V2 binary in and out"] == statuses["explain"] == 200
    assert statuses["no key"] == 401 and statuses["two authorization headers"] == 400
    assert statuses["explain, not a number"] == statuses["explain, 5000 digits"] == 422
    assert statuses["over the body limit"] == 413 and statuses["gzip-encoded"] == 415
    assert b"connection: close" in answers["fast"]["one row"]  # asked for by the request, on both doors

    (fast, fast_log), (stock, stock_log) = two_doors["fast"], two_doors["stock"]
    counters = _counters(fast)
    assert counters == _counters(stock)
    assert any(name.startswith("pulse_http_rejected_total") for name in counters)
    assert 'pulse_http_requests_total{route="/predict",status="200"}' in counters
    lines = _written(fast_log)
    assert lines == _written(stock_log)
    print(f"{len(TABLE)} requests, {len(lines)} request-log lines, {len(counters)} counters: equal on both doors")
    assert len(lines) >= 1 + 3 + 3 + 3  # the /predict 200s' rows at least
