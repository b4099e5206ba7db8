"""``python -m benchmarks grpc-hostile``: hostile HTTP/2 clients against the gRPC port of a real server process.

Each case replays an attack on ``PULSE_GRPC_PORT`` over raw HTTP/2 frames (the ``h2`` library on a plain socket,
so that the client can do what no gRPC library would): rapid reset (CVE-2023-44487: a stream opened and cancelled
at once, thousands of times), a flood of streams past the connection's limit, half-open streams held idle,
oversized metadata, a ping flood, and garbage where a protobuf message belongs. Throughout each one, a liveness
probe (``GET /health`` on a new connection) and a fresh ``ModelInfer`` (a new gRPC channel) run every 100 ms with a
1 s deadline, as a probe would; a case is ``ok`` when the server gave the bounded answer the case expects, every
probe and every fresh call was answered within the second, and the in-flight gauge came back to 0. The CI size
runs in well under a minute; ``--full`` is the attack's original size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.hostile import HealthProbes, run_case, write_results
from benchmarks.procs import ROOT, Repeating, ServerProcess, free_port, percentile_ms, python_command, run_server

INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"
PROBE_DEADLINE = 1.0  # a Kubernetes probe's default timeout
MAX_STREAMS = 50  # PULSE_GRPC_MAX_STREAMS for the suite's server: the flood cases go past it


@dataclass(frozen=True)
class Size:
    rapid_reset_connections: int = 2
    rapid_reset_streams: int = 2000  # opened and reset on each connection
    flood_connections: int = 4  # connections each opening 3 x MAX_STREAMS streams it never finishes
    half_open_connections: int = 4  # connections each holding MAX_STREAMS half-open streams ...
    half_open_seconds: float = 3.0  # ... this long
    pings: int = 2000
    garbage_calls: int = 200


FULL = Size(
    rapid_reset_connections=8,
    rapid_reset_streams=20_000,
    flood_connections=40,
    half_open_connections=40,
    half_open_seconds=20.0,
    pings=100_000,
    garbage_calls=5000,
)


def infer_body(features: int) -> bytes:
    """One valid serialized ``ModelInferRequest``: a single row of ``features`` values."""
    from server.core.v2_grpc import ModelInferRequest

    request: Any = ModelInferRequest(model_name="churn")
    request.inputs.add(name="features", datatype="FP32", shape=[1, features])
    request.raw_input_contents.append(np.full((1, features), 2.0, dtype="<f4").tobytes())
    return bytes(request.SerializeToString())


def framed(message: bytes) -> bytes:
    """A gRPC length-prefixed message (uncompressed)."""
    return struct.pack(">?I", False, len(message)) + message


class RawH2:
    """A client-side HTTP/2 connection over a plain socket: frames sent as asked, events read as they come."""

    def __init__(self, port: int) -> None:
        import h2.config
        import h2.connection

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.flush()
        self.events: list[Any] = []
        self.closed = False

    def headers(self, extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        return [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", INFER_PATH),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *(extra or []),
        ]

    def open_stream(self, extra: list[tuple[str, str]] | None = None) -> int:
        stream = int(self.h2.get_next_available_stream_id())
        self.h2.send_headers(stream, self.headers(extra))
        return stream

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, seconds: float) -> None:
        """Read and record events for up to ``seconds`` (less if the server closes)."""
        import h2.exceptions

        deadline = time.monotonic() + seconds
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            try:
                self.events.extend(self.h2.receive_data(data))
            except h2.exceptions.ProtocolError:
                self.closed = True
                return
            with contextlib.suppress(OSError):
                self.flush()

    def count(self, kind: str) -> int:
        return sum(type(event).__name__ == kind for event in self.events)

    def goaway(self) -> str | None:
        for event in self.events:
            if type(event).__name__ == "ConnectionTerminated":
                return str(getattr(event.error_code, "name", event.error_code))
        return None

    def grpc_statuses(self) -> list[int]:
        """The ``grpc-status`` of each stream that ended with trailers (or a trailers-only answer)."""
        found = []
        for event in self.events:
            if type(event).__name__ in ("TrailersReceived", "ResponseReceived"):
                status = dict(event.headers).get("grpc-status")
                if status is not None:
                    found.append(int(status))
        return found

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class FreshCalls(Repeating):
    """A ``ModelInfer`` on a new gRPC channel every ``every`` seconds with a 1 s deadline: is a new client still
    answered? A fast ``RESOURCE_EXHAUSTED`` (an attack holding every call the worker allows) is an answer, as a 503
    is on HTTP, and counted as refused; a timeout or any other status is a failure."""

    def __init__(self, port: int, body: bytes, every: float = 0.1) -> None:
        super().__init__(every)
        self.target, self.body = f"127.0.0.1:{port}", body
        self.latencies: list[float] = []
        self.refused = 0
        self.failures: list[str] = []

    def once(self) -> None:
        import grpc

        started = time.perf_counter()
        with grpc.insecure_channel(self.target) as channel:
            call = channel.unary_unary(INFER_PATH)
            try:
                call(self.body, timeout=PROBE_DEADLINE)
                self.latencies.append(time.perf_counter() - started)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.refused += 1
                else:
                    self.failures.append(exc.code().name)

    def summary(self) -> dict[str, Any]:
        return {
            "calls": len(self.latencies) + self.refused + len(self.failures),
            "refused": self.refused,
            "failed": len(self.failures),
            "failures": sorted(set(self.failures)),
            "p50_ms": percentile_ms(self.latencies, 0.5),
            "p99_ms": percentile_ms(self.latencies, 0.99),
        }


@dataclass
class Context:
    server: ServerProcess
    port: int
    grpc_port: int
    size: Size
    body: bytes
    notes: dict[str, Any] = field(default_factory=dict)


# --- the cases ----------------------------------------------------------------------------------------------------
def rapid_reset(ctx: Context) -> dict[str, Any]:
    """Streams opened and reset at once (CVE-2023-44487), in bursts: the server stays available."""
    goaways = []
    sent = 0
    for _ in range(ctx.size.rapid_reset_connections):
        conn = RawH2(ctx.grpc_port)
        try:
            for _ in range(ctx.size.rapid_reset_streams):
                stream = conn.open_stream()
                conn.h2.reset_stream(stream)
                sent += 1
                if sent % 100 == 0:
                    try:
                        conn.flush()
                    except OSError:
                        conn.closed = True
                        break
                    conn.pump(0.0)
                    if conn.closed:
                        break
            with contextlib.suppress(OSError):
                conn.flush()
            conn.pump(0.5)
            goaways.append(conn.goaway())
        finally:
            conn.close()
    return {"ok": True, "streams_reset": sent, "goaway": goaways}


def stream_flood(ctx: Context) -> dict[str, Any]:
    """Each connection opens three times PULSE_GRPC_MAX_STREAMS streams at once, before it has read the server's
    SETTINGS (so the client library does not hold it back), and finishes none: the ones past the limit are refused
    (RST_STREAM), the limit holds."""
    refused = opened = 0
    conns = [RawH2(ctx.grpc_port) for _ in range(ctx.size.flood_connections)]
    try:
        for conn in conns:
            for _ in range(3 * MAX_STREAMS):
                conn.open_stream()
                opened += 1
            conn.flush()
        for conn in conns:
            conn.pump(0.3)
            refused += conn.count("StreamReset")
        announced = [conn.h2.remote_settings.max_concurrent_streams for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    ok = max(announced) <= MAX_STREAMS and refused >= len(conns) * 2 * MAX_STREAMS
    return {"ok": ok, "opened": opened, "reset": refused, "announced_limit": announced}


def half_open_streams(ctx: Context) -> dict[str, Any]:
    """Connections hold PULSE_GRPC_MAX_STREAMS streams each, headers sent and no message, for seconds. gRPC has no
    timeout for a message that never comes: the streams are bounded per connection, and all the worker's calls by
    PULSE_GRPC_MAX_CONCURRENT_RPCS (past it, new calls are refused at once); at full size the bound is reached."""
    conns = [RawH2(ctx.grpc_port) for _ in range(ctx.size.half_open_connections)]
    try:
        for conn in conns:
            conn.pump(0.2)
            for _ in range(MAX_STREAMS):
                conn.open_stream()
            conn.flush()
        time.sleep(ctx.size.half_open_seconds)
        held = sum(not conn.closed for conn in conns)
    finally:
        for conn in conns:
            conn.close()
    return {"ok": True, "streams": len(conns) * MAX_STREAMS, "connections_still_open": held}


def oversized_metadata(ctx: Context) -> dict[str, Any]:
    """A call whose metadata is twice PULSE_MAX_HEADER_BYTES: refused, the connection's other calls unharmed."""
    conn = RawH2(ctx.grpc_port)
    try:
        conn.pump(0.2)
        big = conn.open_stream([("x-padding", "a" * 64 * 1024)])
        conn.h2.send_data(big, framed(ctx.body), end_stream=True)
        conn.flush()
        conn.pump(1.0)
        statuses = conn.grpc_statuses()
        refused = conn.count("StreamReset") > 0 or conn.closed or bool(conn.goaway()) or (0 not in statuses)
    finally:
        conn.close()
    return {"ok": refused, "grpc_statuses": statuses, "goaway": conn.goaway(), "closed": conn.closed}


def ping_flood(ctx: Context) -> dict[str, Any]:
    """Thousands of PINGs with no call in flight: GOAWAY (too many pings) long before they are all answered."""
    conn = RawH2(ctx.grpc_port)
    sent = 0
    try:
        conn.pump(0.2)
        for i in range(ctx.size.pings):
            conn.h2.ping(struct.pack(">Q", i))
            sent += 1
            if sent % 50 == 0:
                try:
                    conn.flush()
                except OSError:
                    break
                conn.pump(0.0)
                if conn.closed or conn.goaway():
                    break
        with contextlib.suppress(OSError):
            conn.flush()
        conn.pump(1.0)
        acks = conn.count("PingAckReceived")
    finally:
        conn.close()
    return {"ok": conn.goaway() is not None, "pings_sent": sent, "acks": acks, "goaway": conn.goaway()}


def garbage_messages(ctx: Context) -> dict[str, Any]:
    """Random bytes where a ModelInferRequest belongs: every call INVALID_ARGUMENT (3), never INTERNAL or
    UNKNOWN."""
    rng = np.random.default_rng(35)
    conn = RawH2(ctx.grpc_port)
    try:
        conn.pump(0.2)
        for i in range(ctx.size.garbage_calls):
            stream = conn.open_stream()
            garbage = rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
            conn.h2.send_data(stream, framed(garbage), end_stream=True)
            if i % (MAX_STREAMS // 2) == MAX_STREAMS // 2 - 1:  # stay within the stream limit
                conn.flush()
                while len(conn.grpc_statuses()) < i + 1 and not conn.closed:
                    conn.pump(0.5)
        conn.flush()
        deadline = time.monotonic() + 10
        while len(conn.grpc_statuses()) < ctx.size.garbage_calls and not conn.closed and time.monotonic() < deadline:
            conn.pump(0.5)
        statuses = conn.grpc_statuses()
    finally:
        conn.close()
    tally = {str(code): statuses.count(code) for code in sorted(set(statuses))}
    # A random message may happen to decode as a valid request with no inputs: 3 either way, or 0 never.
    return {"ok": len(statuses) == ctx.size.garbage_calls and set(statuses) == {3}, "grpc_status": tally}


CASES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "rapid_reset": rapid_reset,
    "stream_flood": stream_flood,
    "half_open_streams": half_open_streams,
    "oversized_metadata": oversized_metadata,
    "ping_flood": ping_flood,
    "garbage_messages": garbage_messages,
}


@contextlib.contextmanager
def _server(artifacts: Path, workdir: Path) -> Iterator[tuple[ServerProcess, int]]:
    port, grpc_port = free_port(), free_port()
    shutil.copy(artifacts / "model.onnx", workdir / "model.onnx")
    env = {"PULSE_GRPC_PORT": str(grpc_port), "PULSE_GRPC_MAX_STREAMS": str(MAX_STREAMS)}
    command = python_command(
        "-m", "server", "--model", str(workdir / "model.onnx"), "--port", str(port), "--log-level", "error"
    )
    with run_server(command, port, workdir / "server.log", env) as server:
        yield server, grpc_port


def _probed(ctx: Context, case: Callable[[Context], dict[str, Any]]) -> dict[str, Any]:
    """``case`` with a liveness probe and fresh calls running throughout: not ok unless each was answered."""
    with HealthProbes(ctx.port, every=0.1) as probes, FreshCalls(ctx.grpc_port, ctx.body) as fresh:
        outcome = case(ctx)
        time.sleep(0.3)  # a probe and a call after the attack's last frame too
    outcome["health"], outcome["fresh_infer"] = probes.summary(), fresh.summary()
    outcome["ok"] = outcome["ok"] and outcome["health"]["failed"] == 0 and outcome["fresh_infer"]["failed"] == 0
    return outcome


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = FULL if args.full else Size()
    features = json.loads((args.artifacts / "metrics.json").read_text())["features"]
    workdir = Path(tempfile.mkdtemp(prefix="pulse-grpc-hostile-"))
    results: dict[str, Any] = {"size": asdict(size), "cases": {}}
    try:
        with _server(args.artifacts, workdir) as (server, grpc_port):
            port = int(server.url.rsplit(":", 1)[1])
            ctx = Context(server, port, grpc_port, size, infer_body(len(features)))
            for name in args.case or list(CASES):
                outcome = results["cases"][name] = run_case(server, name, partial(_probed, ctx, CASES[name]))
                if not outcome["server_alive"]:
                    break
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["passed"] = all(case["ok"] for case in results["cases"].values())
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks grpc-hostile``."""
    parser = commands.add_parser(
        "grpc-hostile",
        help="hostile HTTP/2 clients (rapid reset, stream and ping floods, garbage) against the gRPC port",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    parser.add_argument("--full", action="store_true", help="the attack's original size (minutes)")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only this case (repeatable)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "grpc_hostile.json", help="JSON figures"
    )
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    return write_results(run(args), args.out, "gRPC hostile suite")
