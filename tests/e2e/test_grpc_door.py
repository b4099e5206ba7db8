"""The gRPC door's bounds against a real server process: one admission rule over every door (a request held on
HTTP is one in flight for gRPC too), calls past ``PULSE_MAX_IN_FLIGHT`` refused at once with RESOURCE_EXHAUSTED,
and a drain that turns new calls away with UNAVAILABLE, reports NOT_SERVING to the health service, and ends within
the drain and grace periods."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.grpc_hostile import INFER_PATH, infer_body
from benchmarks.procs import ServerProcess, free_port, http_get, metric, python_command, run_server
from common.model.loader import load_model

pytestmark = pytest.mark.e2e

SERVICE = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def body(exported: Path) -> bytes:
    return infer_body(len(load_model(exported).info.features))


@pytest.fixture(scope="module")
def bounded(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    folder = tmp_path_factory.mktemp("grpc-bounded")
    port, grpc_port = free_port(), free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning")
    env = {"PULSE_GRPC_PORT": str(grpc_port), "PULSE_MAX_IN_FLIGHT": "1"}
    with run_server(command, port, folder / "server.log", env=env) as proc:
        yield proc, grpc_port


def _infer(grpc_port: int, body: bytes) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        try:
            channel.unary_unary(INFER_PATH)(body, timeout=5)
            return "OK"
        except grpc.RpcError as exc:
            return str(exc.code().name)


def _health(grpc_port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


def test_a_request_held_on_http_is_one_in_flight_for_grpc_too(bounded: tuple[ServerProcess, int], body: bytes) -> None:
    proc, grpc_port = bounded
    port = int(proc.url.rsplit(":", 1)[1])
    row = json.dumps(dict.fromkeys(load_features(proc), 2)).encode()
    held = socket.create_connection(("127.0.0.1", port))
    try:
        # Half a /predict body: admitted at its head, held until its answer.
        held.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
        held.sendall(b"Content-Length: %d\r\n\r\n" % len(row) + row[:5])
        time.sleep(0.3)
        assert _infer(grpc_port, body) == "RESOURCE_EXHAUSTED"
        with socket.create_connection(("127.0.0.1", port)) as other:
            head = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            other.sendall(head + b"Content-Length: %d\r\n\r\n" % len(row) + row)
            assert other.recv(4096).startswith(b"HTTP/1.1 503 ")
        assert http_get(proc.url + "/health")[0] == 200  # probes are never refused ...
        assert _health(grpc_port) == health_pb2.HealthCheckResponse.SERVING  # ... on either door
        assert http_get(proc.url + "/metadata")[0] == 503  # the traffic is, whichever route
        # Scrapes and admin calls are neither counted nor shed: an operator can watch and act on a full worker.
        assert http_get(proc.url + "/metrics")[0] == 200
        shadow = urllib.request.Request(proc.url + "/admin/shadow", method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(shadow, timeout=5)
        refused.value.close()
        assert refused.value.code == 403  # API keys are off here: refused as admin calls are, not shed
        assert _server_metadata(grpc_port)  # an open method: neither counted nor shed
        held.sendall(row[5:])
        assert held.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        held.close()
    assert _infer(grpc_port, body) == "OK"  # the place it held is free again


def _server_metadata(grpc_port: int) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        return bytes(channel.unary_unary(f"/{SERVICE}/ServerMetadata")(b"", timeout=5))


def load_features(proc: ServerProcess) -> list[str]:
    return list(json.loads(http_get(proc.url + "/metadata")[1])["features"])


def test_calls_past_the_bound_are_refused_at_once_and_counted(bounded: tuple[ServerProcess, int], body: bytes) -> None:
    proc, grpc_port = bounded
    before = metric(proc.url, "pulse_http_rejected_total", reason="overloaded")

    async def flood() -> collections.Counter[str]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            infer = channel.unary_unary(INFER_PATH)

            async def one() -> str:
                try:
                    await infer(body, timeout=10)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return str(exc.code().name)

            return collections.Counter(await asyncio.gather(*(one() for _ in range(64))))

    outcomes = asyncio.run(flood())
    assert set(outcomes) == {"OK", "RESOURCE_EXHAUSTED"}, outcomes  # nothing else: no timeout, no error
    assert outcomes["RESOURCE_EXHAUSTED"] > 0 and outcomes["OK"] > 0
    assert metric(proc.url, "pulse_http_rejected_total", reason="overloaded") - before == outcomes["RESOURCE_EXHAUSTED"]


def test_a_drain_turns_new_calls_away_and_ends_within_its_budget(exported: Path, tmp_path: Path, body: bytes) -> None:
    port, grpc_port = free_port(), free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "info")
    env = {"PULSE_GRPC_PORT": str(grpc_port), "PULSE_DRAIN_SECONDS": "3", "PULSE_GRACEFUL_TIMEOUT_SECONDS": "5"}
    with run_server(command, port, tmp_path / "server.log", env=env) as proc:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        assert _infer(grpc_port, body) == "OK"
        proc.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # a Watch hears it at once
        assert _infer(grpc_port, body) == "UNAVAILABLE"
        assert _health(grpc_port) == _health(grpc_port, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert http_get(proc.url + "/ready")[0] == 503
        assert proc.process.wait(timeout=20) == 0
        # The drain, then at most the grace period (which the open Watch stream, a call that never ends, uses up),
        # then the process's own exit: well within a manifest's terminationGracePeriodSeconds of drain + grace + 10.
        assert time.monotonic() - signalled < 3 + 5 + 2
        channel.close()
