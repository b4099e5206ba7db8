"""OpenTelemetry tracing against a real OTLP receiver that decodes the protocol's own messages
(``opentelemetry-proto``), over both OTLP transports: parentage from W3C ``traceparent`` on every door (the fast
door, the ASGI door, gRPC metadata), the sampling decision a parent carries, the resource the ``OTEL_*`` variables
describe, and spans dropped and counted when the collector is down while every answer still comes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from benchmarks.grpc_hostile import INFER_PATH, infer_body
from benchmarks.procs import ServerProcess, free_port, http_get, metric, python_command, run_server
from tests.support import running_prometheus

pytestmark = pytest.mark.e2e

PARENT_TRACE, PARENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


class Received:
    """What a receiver was sent: every span, with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []
        self.lock = threading.Lock()

    def take(self, request: Any) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)

    def of_trace(self, trace_id: str, count: int, within: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + within
        while True:
            with self.lock:
                found = [span for _, span in self.spans if span.trace_id.hex() == trace_id]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture
def http_receiver() -> Iterator[tuple[int, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            ok = self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
            if ok:
                received.take(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if ok else 400)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[int, Received]]:
    received = Received()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.take(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, received
    server.stop(0)


def _traced_server(exported: Path, folder: Path, env: dict[str, str]) -> Any:
    port, grpc_port = free_port(), free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning")
    base = {"PULSE_GRPC_PORT": str(grpc_port), "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "churn-api"}
    return run_server(command, port, folder / "server.log", env={**base, **env}), grpc_port


def _row(server: ServerProcess) -> bytes:
    features = json.loads(http_get(server.url + "/metadata")[1])["features"]
    return json.dumps(dict.fromkeys(features, 2)).encode()


def _post(server: ServerProcess, body: bytes, traceparent: str | None, chunked: bool = False) -> bytes:
    port = int(server.url.rsplit(":", 1)[1])
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
    if traceparent:
        head += f"traceparent: {traceparent}\r\ntracestate: vendor=x\r\n".encode()
    if chunked:  # not the fast door's own path: the ASGI door answers it
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    return answer


def _infer(grpc_port: int, features: int, traceparent: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        channel.unary_unary(INFER_PATH)(infer_body(features), timeout=10, metadata=(("traceparent", traceparent),))


def _attributes(span: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def test_every_door_continues_the_callers_trace_over_otlp_http(
    exported: Path, tmp_path: Path, http_receiver: tuple[int, Received]
) -> None:
    receiver_port, received = http_receiver
    log = tmp_path / "requests.jsonl"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=churn%20ml",
        "PULSE_REQUEST_LOG": str(log),
    }
    running, grpc_port = _traced_server(exported, tmp_path, env)
    with running as server:
        body = _row(server)
        features = len(json.loads(body))
        doors = {"fast": "01", "asgi": "02", "grpc": "03"}  # a trace each: the caller's parent span in it
        for door, n in doors.items():
            traceparent = f"00-{PARENT_TRACE[:-2]}{n}-{PARENT_SPAN}-01"
            if door == "grpc":
                _infer(grpc_port, features, traceparent)
            else:
                _post(server, body, traceparent, chunked=door == "asgi")
        _post(server, body, f"00-{PARENT_TRACE[:-2]}ff-{PARENT_SPAN}-00")  # the caller did not sample it
        for door, n in doors.items():
            (root,) = received.of_trace(PARENT_TRACE[:-2] + n, 1)
            assert root.kind == root.SPAN_KIND_SERVER and root.parent_span_id.hex() == PARENT_SPAN, door
            parsed, score, scored = root.events  # its stages, in order, inside the request's time
            assert (parsed.name, score.name, scored.name) == ("parsed", "score", "scored")
            times = [root.start_time_unix_nano, parsed.time_unix_nano, score.time_unix_nano, scored.time_unix_nano]
            assert times == sorted(times) and scored.time_unix_nano <= root.end_time_unix_nano
            attributes = _attributes(root)
            assert attributes["pulse.model.name"] == "churn" and attributes["pulse.rows"] == 1
            if door == "grpc":
                assert root.name == "inference.GRPCInferenceService/ModelInfer"
                assert attributes["rpc.system"] == "grpc" and attributes["rpc.grpc.status_code"] == 0
            else:
                assert root.name == "POST /predict" and root.trace_state == "vendor=x"
                assert attributes["http.response.status_code"] == 200 and attributes["url.path"] == "/predict"
        assert received.of_trace(PARENT_TRACE[:-2] + "ff", 1, within=1.0) == []  # sampled by nobody: no span
        resource = received.spans[0][0]
        assert resource["service.name"] == "churn-api" and resource["deployment.environment"] == "test"
        assert resource["team"] == "churn ml"
        assert metric(server.url, "pulse_trace_spans_exported_total") >= 3
        assert metric(server.url, "pulse_trace_spans_dropped_total") == 0
    # The request log joins each traced row to its trace; the untraced row carries none.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(line.get("trace_id", "-") for line in lines) == sorted(
        ["-", *(PARENT_TRACE[:-2] + n for n in doors.values())]
    )


def test_spans_over_otlp_grpc_and_a_root_trace_per_request(
    exported: Path, tmp_path: Path, grpc_receiver: tuple[int, Received]
) -> None:
    receiver_port, received = grpc_receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    running, _ = _traced_server(exported, tmp_path, env)
    with running as server:
        body = _row(server)
        for _ in range(3):
            _post(server, body, None)  # no traceparent: each starts a trace of its own (ratio 1.0)
        deadline = time.monotonic() + 10
        while len(received.spans) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    roots = [span for _, span in received.spans if span.kind == span.SPAN_KIND_SERVER]
    assert len(roots) == 3 and len({span.trace_id for span in roots}) == 3
    assert all(span.parent_span_id == b"" for span in roots)


def test_a_collector_that_is_down_costs_no_answer_and_its_spans_are_counted(exported: Path, tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed}", "OTEL_EXPORTER_OTLP_TIMEOUT": "500"}
    running, _ = _traced_server(exported, tmp_path, env)
    with running as server:
        body = _row(server)
        for _ in range(5):
            _post(server, body, f"00-{PARENT_TRACE}-{PARENT_SPAN}-01")
        deadline = time.monotonic() + 10
        while metric(server.url, "pulse_trace_spans_dropped_total") < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(server.url, "pulse_trace_spans_dropped_total") == 5  # a span per request
        assert metric(server.url, "pulse_trace_spans_exported_total") == 0


def test_a_bad_otel_variable_stops_start_up_with_one_line(exported: Path) -> None:
    result = subprocess.run(
        python_command("-m", "server", "--model", str(exported), "--port", str(free_port())),
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_SAMPLER": "sometimes"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: OTEL_TRACES_SAMPLER='sometimes': expected one of always_on, always_off, traceidratio, "
        "parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
    ]


def test_a_real_prometheus_stores_the_latency_exemplars_that_lead_to_traces(exported: Path, tmp_path: Path) -> None:
    """Scraped as OpenMetrics (what Prometheus asks for), the latency histogram's buckets carry the trace id of a
    traced request; Prometheus with exemplar storage keeps them, so a dashboard jumps from a latency to its trace."""
    running, _ = _traced_server(exported, tmp_path, {"OTEL_TRACES_EXPORTER": "console"})
    with running as server:
        body = _row(server)
        traces = [f"{PARENT_TRACE[:-2]}{n:02x}" for n in range(4)]
        port = int(server.url.rsplit(":", 1)[1])
        with running_prometheus(port, tmp_path, features=["exemplar-storage"]) as (api, process):
            _scraped(api, process, within=60)
            for trace in traces:  # one a scrape: each bucket shows its latest traced request
                _post(server, body, f"00-{trace}-{PARENT_SPAN}-01")
                time.sleep(1.5)
            deadline, found = time.monotonic() + 60, set()
            query = urllib.parse.urlencode(
                {
                    "query": "pulse_http_request_duration_seconds_bucket",
                    "start": time.time() - 600,
                    "end": time.time() + 600,
                }
            )
            while not set(traces) <= found:
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                assert time.monotonic() < deadline, f"exemplars stored: {found}"
                time.sleep(0.5)
                try:
                    with urllib.request.urlopen(f"{api}/query_exemplars?{query}", timeout=5) as response:
                        data = json.loads(response.read())["data"]
                except OSError:
                    continue  # Prometheus still starting
                found = {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}
            assert all(series["seriesLabels"]["route"] == "/predict" for series in data)


def _scraped(api: str, process: Any, within: float) -> None:
    """Wait until Prometheus has scraped the server once."""
    deadline = time.monotonic() + within
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "Prometheus did not scrape the server"
        try:
            with urllib.request.urlopen(f"{api}/query?query=up", timeout=5) as response:
                if [r["value"][1] for r in json.loads(response.read())["data"]["result"]] == ["1"]:
                    return
        except OSError:
            pass  # still starting
        time.sleep(0.3)
