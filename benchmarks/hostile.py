"""``python -m benchmarks hostile``: hostile clients against a real server process, over raw sockets on loopback.

Each case replays an attack (oversized or endless headers, idle and half-sent requests, held bodies, a connection
flood, batch load against liveness probes, inputs JSON cannot echo, HTTP framing faults, bad start-up files),
bounded in count and time, and records what the server did: statuses, seconds, its RSS and open descriptors
before and after, and the in-flight gauge afterwards. ``ok`` says whether the outcome is the one a trusted server
gives; the command exits 1 when any case is not. The CI size runs in about a minute; ``--full`` is the attack's
original size. Timeouts are set to 2 s here (defaults 10 s and 30 s) so the cases finish quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.procs import (
    ROOT,
    Repeating,
    ServerProcess,
    free_port,
    http_get,
    metric,
    percentile_ms,
    python_command,
    run_server,
)
from benchmarks.run import run_wrk

TIMEOUT_SECONDS = 2.0  # PULSE_HEADER_TIMEOUT_SECONDS and PULSE_BODY_TIMEOUT_SECONDS for the suite's server
PROBE_TIMEOUT = 1.0  # a Kubernetes liveness probe's default timeout


@dataclass(frozen=True)
class Size:
    idle: int = 300  # silent connections
    partial: int = 200  # connections each with a partial head, a partial body, or Expect and no body
    header_mb: int = 16  # one streamed header
    flood_connections: int = 20  # connections each streaming ...
    flood_mb: int = 4  # ... this much unfinished header
    held_bodies: int = 200  # connections each holding 1 MiB - 1 byte of a 1 MiB body
    attempts: int = 3000  # idle connection attempts in the flood
    batch_clients: int = 64
    batch_seconds: float = 5.0


FULL = Size(
    idle=2000,
    partial=1000,
    header_mb=128,
    flood_connections=50,
    flood_mb=20,
    held_bodies=2000,
    attempts=19_000,
    batch_seconds=20.0,
)


# --- the server and what it looks like from outside ------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def in_flight(url: str) -> float:
    """The in-flight gauge (the scrape that reads it is never counted)."""
    return metric(url, "pulse_http_requests_in_flight")


def settled_in_flight(url: str, within: float = 10.0) -> float:
    """The in-flight gauge once the server has answered what the case left queued (a load generator stopped
    mid-request), polled for up to ``within`` seconds: a leak stays above 0."""
    deadline = time.perf_counter() + within
    while (value := in_flight(url)) != 0 and time.perf_counter() < deadline:
        time.sleep(0.2)
    return value


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[int | None, dict[str, str], bytes, float]:
    """Send ``data`` on a new connection; the first response's status, headers and body, and the seconds taken.
    Status ``None``: the server closed or went quiet without answering. The server may answer (and stop reading)
    before ``data`` is all sent: the answer is still read."""
    started = time.perf_counter()
    with connect(port, wait) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        return (*read_response(sock), time.perf_counter() - started)


class ResponseStream:
    """Successive responses on one connection (pipelining): one buffered reader shared by every response, which
    ``http.client`` would otherwise make afresh, and close, for each."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def makefile(self, *args: object, **kwargs: object) -> ResponseStream:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def close(self) -> None:  # http.client closes its reader after each body; the next response needs it
        pass


def read_response(sock: socket.socket | ResponseStream) -> tuple[int | None, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)  # type: ignore[arg-type]
    try:
        response.begin()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None, {}, b""
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def is_json_error(status: int | None, headers: dict[str, str], body: bytes) -> bool:
    if status is None or status < 400:
        return True
    try:
        json.loads(body)
    except ValueError:
        return False
    return headers.get("content-type", "").startswith("application/json")


class HealthProbes(Repeating):
    """``GET /health`` on a new connection every ``every`` seconds with a 1 s timeout, as a liveness probe does."""

    def __init__(self, port: int, every: float = 0.05) -> None:
        super().__init__(every)
        self.port = port
        self.latencies: list[float] = []
        self.failures = 0

    def once(self) -> None:
        started = time.perf_counter()
        try:
            status = exchange(self.port, b"GET /health HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n", 1.0)[0]
        except OSError:
            status = None
        if status == 200:
            self.latencies.append(time.perf_counter() - started)
        else:
            self.failures += 1

    def summary(self) -> dict[str, Any]:
        return {
            "probes": len(self.latencies) + self.failures,
            "failed": self.failures,
            "p50_ms": percentile_ms(self.latencies, 0.5),
            "p99_ms": percentile_ms(self.latencies, 0.99),
        }


# --- the cases ----------------------------------------------------------------------------------------------------
@dataclass
class Context:
    server: ServerProcess
    port: int
    size: Size
    features: list[str]
    row: bytes
    batch: bytes
    workdir: Path


def streamed_header(ctx: Context) -> dict[str, Any]:
    """One connection streams a header of ``header_mb`` MB: answered 431 within a second, memory returned, and
    /health keeps answering meanwhile."""
    total = ctx.size.header_mb * 1024 * 1024
    chunk = b"a" * 65536
    with HealthProbes(ctx.port) as probes, connect(ctx.port, 10) as sock:
        started = time.perf_counter()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        with contextlib.suppress(OSError):  # the server stops reading once it has answered
            while sent < total and not _readable(sock):
                sock.sendall(chunk)
                sent += len(chunk)
        status, headers, body = read_response(sock)
        seconds = time.perf_counter() - started
    return {
        "status": status,
        "sent_mb": round(sent / 2**20, 1),
        "seconds": round(seconds, 2),
        "health": probes.summary(),
        "ok": status == 431 and seconds < 1 + TIMEOUT_SECONDS and probes.failures == 0,
    }


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def many_headers(ctx: Context) -> dict[str, Any]:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100_000)) + b"\r\n"
    status, headers, body, seconds = exchange(ctx.port, head, 10)
    return {
        "status": status,
        "seconds": round(seconds, 2),
        "ok": status == 431 and is_json_error(status, headers, body),
    }


def header_flood(ctx: Context) -> dict[str, Any]:
    """Many connections each streaming megabytes of unfinished header at once: refused, RSS bounded."""
    before = rss_mb(ctx.server.pid)
    peak = [before]
    results: list[int | None] = []

    def attack() -> None:
        with connect(ctx.port, 20) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Big: ")
            with contextlib.suppress(OSError):
                for _ in range(ctx.size.flood_mb * 16):
                    if _readable(sock):
                        break
                    sock.sendall(b"a" * 65536)
            results.append(read_response(sock)[0])

    threads = [threading.Thread(target=attack) for _ in range(ctx.size.flood_connections)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak.append(rss_mb(ctx.server.pid))
        time.sleep(0.05)
    return {
        "connections": ctx.size.flood_connections,
        "statuses": _tally(results),
        "rss_mb_before": round(before, 1),
        "rss_mb_peak": round(max(peak), 1),
        "ok": results.count(431) == len(results) and max(peak) - before < 100,
    }


def _tally(statuses: list[int | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return counts


def _held_open(ctx: Context, n: int, opening: bytes, name: str) -> dict[str, Any]:
    """``n`` connections that send ``opening`` and then nothing: how many the server has closed after its timeout."""
    fds_before = descriptors(ctx.server.pid)
    sockets = []
    for _ in range(n):
        sock = connect(ctx.port)
        if opening:
            sock.sendall(opening)
        sockets.append(sock)
    opened = time.perf_counter()
    fds_open = descriptors(ctx.server.pid)
    time.sleep(TIMEOUT_SECONDS + 1.5)
    closed, answered = 0, []
    for sock in sockets:
        is_closed, data = _drain(sock)
        closed += is_closed
        if data.startswith(b"HTTP/1.1 100"):
            data = data.split(b"\r\n\r\n", 1)[1]
        if data.startswith(b"HTTP/1.1 "):
            answered.append(int(data[9:12]))
    for sock in sockets:
        sock.close()
    time.sleep(0.3)
    return {
        "case": name,
        "connections": n,
        "closed_by_server": closed,
        "seconds_waited": round(time.perf_counter() - opened, 1),
        "statuses": _tally(answered),  # type: ignore[arg-type]
        "fds_before": fds_before,
        "fds_while_open": fds_open,
        "fds_after": descriptors(ctx.server.pid),
        "ok": closed == n and set(answered) <= {408},
    }


def _drain(sock: socket.socket) -> tuple[bool, bytes]:
    """Whether the server has closed ``sock`` (end of stream or reset), and what it sent before."""
    sock.setblocking(False)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return False, data
        except OSError:
            return True, data
        if not chunk:
            return True, data
        data += chunk


def idle_connections(ctx: Context) -> dict[str, Any]:
    return _held_open(ctx, ctx.size.idle, b"", "silent")


def partial_header(ctx: Context) -> dict[str, Any]:
    return _held_open(ctx, ctx.size.partial, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Ty", "partial head")


def partial_body(ctx: Context) -> dict[str, Any]:
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"
    return _held_open(ctx, ctx.size.partial, head, "partial body")


def expect_without_body(ctx: Context) -> dict[str, Any]:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    return _held_open(ctx, ctx.size.partial, head, "Expect: 100-continue, no body")


def held_bodies(ctx: Context) -> dict[str, Any]:
    """Connections each holding 1 MiB - 1 byte of a 1 MiB body: the worker's memory stays bounded; the
    connections past the pending-body budget get 503 + Retry-After."""
    size = 1024 * 1024
    before = rss_mb(ctx.server.pid)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
    sockets, refused = [], 0
    for _ in range(ctx.size.held_bodies):
        sock = connect(ctx.port)
        sock.sendall(head)
        with contextlib.suppress(OSError):
            sock.sendall(b" " * (size - 1))
        sockets.append(sock)
    time.sleep(0.5)
    peak = rss_mb(ctx.server.pid)
    for sock in sockets:
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError, OSError):
            if sock.recv(64).startswith(b"HTTP/1.1 503"):
                refused += 1
        sock.close()
    time.sleep(0.5)
    return {
        "connections": ctx.size.held_bodies,
        "refused_503": refused,
        "rss_mb_before": round(before, 1),
        "rss_mb_holding": round(peak, 1),
        "rss_mb_after": round(rss_mb(ctx.server.pid), 1),
        "ok": peak - before < 200,
    }


def connection_flood(ctx: Context) -> dict[str, Any]:
    """Idle connection attempts far past the connection limit: /health keeps answering throughout."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attempts = min(ctx.size.attempts, hard - 200)
    sockets, failed = [], 0
    with HealthProbes(ctx.port, every=0.02) as probes:
        for _ in range(attempts):
            try:
                sock = socket.socket()
                sock.settimeout(2)
                sock.connect(("127.0.0.1", ctx.port))
                sockets.append(sock)
            except OSError:
                failed += 1
        peak_fds = descriptors(ctx.server.pid)
        time.sleep(1.5)
        for sock in sockets:
            sock.close()
    time.sleep(TIMEOUT_SECONDS)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    health = probes.summary()
    return {
        "attempts": attempts,
        "connect_failures": failed,
        "server_fds_peak": peak_fds,
        "server_fds_after": descriptors(ctx.server.pid),
        "health": health,
        "ok": health["failed"] == 0 and health["probes"] > 0,
    }


def batch_load_liveness(ctx: Context) -> dict[str, Any]:
    """64 keep-alive clients posting 1000-row batches; /health probes meanwhile (p99 within 100 ms)."""
    load: dict[str, Any] = {}

    def hammer() -> None:
        load.update(
            run_wrk(
                ctx.server.url,
                "/predict",
                [ctx.batch],
                ctx.size.batch_seconds,
                ctx.workdir,
                connections=ctx.size.batch_clients,
            )
        )

    thread = threading.Thread(target=hammer)
    with HealthProbes(ctx.port) as probes:
        thread.start()
        thread.join()
    health = probes.summary()
    return {
        "clients": ctx.size.batch_clients,
        "batches_per_s": round(load.get("rps", 0.0), 1),
        "batch_errors": load.get("errors"),
        "health": health,
        "ok": health["failed"] == 0 and health["p99_ms"] is not None and health["p99_ms"] <= 100,
    }


def unechoable_inputs(ctx: Context) -> dict[str, Any]:
    """Inputs that JSON cannot echo back, or that used to crash the V2 handler: every answer a JSON 4xx."""
    v2 = "/v2/models/churn/infer"
    n = len(ctx.features)
    tensor = f'{{"name":"features","datatype":"FP32","shape":[1,{n}],"data":{[1] * n}}}'
    deep = '"id":' + "[" * 300 + "]" * 300
    cases = {
        "lone surrogate key": ("/predict", b'{"\\ud800":1}', {}),
        "lone surrogate in a batch": ("/predict", b'[{"\\ud800":1}]', {}),
        "V2 id lone surrogate": (v2, ('{"id":"\\ud800","inputs":[' + tensor + "]}").encode(), {}),
        "V2 id nested 300 deep": (v2, ("{" + deep + ',"inputs":[' + tensor + "]}").encode(), {}),
        **{
            f"V2 outputs {value}": (v2, ('{"inputs":[' + tensor + '],"outputs":' + value + "}").encode(), {})
            for value in ("5", "true", "1.5")
        },
        **{
            f"V2 header length {value if len(value) < 10 else f'of {len(value)} digits'}": (
                v2,
                b"{}",
                {"Inference-Header-Content-Length": value},
            )
            for value in ("\u00b2", "\u00b3", "\u00b9", "9" * 5000)
        },
    }
    outcomes = {}
    for name, (path, body, extra) in cases.items():
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        status, headers, answer, _ = exchange(ctx.port, head.encode("latin-1") + b"\r\n" + body)
        outcomes[name] = {"status": status, "json": is_json_error(status, headers, answer)}
    left = in_flight(ctx.server.url)
    return {
        "cases": outcomes,
        "in_flight_after": left,
        "ok": left == 0 and all(o["status"] and 400 <= o["status"] < 500 and o["json"] for o in outcomes.values()),
    }


def framing_faults(ctx: Context) -> dict[str, Any]:
    """Smaller HTTP faults, each with the answer RFC 9110/9112 asks for."""
    row = ctx.row

    def post(
        path: str = "/predict", extra: bytes = b"", length: bytes | None = None, host: bytes = b"Host: x\r\n"
    ) -> bytes:
        size = length if length is not None else b"%d" % len(row)
        return (
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\n"
            + host
            + b"Content-Type: application/json\r\n"
            + extra
            + b"Content-Length: "
            + size
            + b"\r\nConnection: close\r\n\r\n"
            + row
        )

    outcomes: dict[str, Any] = {}
    # A valid request followed by bytes that do not parse: the valid one is answered first.
    with connect(ctx.port) as sock:
        sock.sendall(post().replace(b"Connection: close\r\n", b"") + b"GARBAGE\r\n\r\n")
        stream = ResponseStream(sock)
        first, _, _ = read_response(stream)
        second, _, _ = read_response(stream)
    outcomes["pipelined then garbage"] = {"statuses": [first, second], "ok": [first, second] == [200, 400]}
    expected = {
        "Content-Length with trailing space": (post(length=b"%d " % len(row)), 200),
        "no Host": (post(host=b""), 400),
        "two Host headers": (post(host=b"Host: a\r\nHost: b\r\n"), 400),
        "gzip body": (post(extra=b"Content-Encoding: gzip\r\n"), 415),
        "octet-streamXYZ to V2": (
            post("/v2/models/churn/infer", b"Inference-Header-Content-Length: 2\r\n").replace(
                b"application/json", b"application/octet-streamXYZ"
            ),
            415,
        ),
    }
    for name, (request, want) in expected.items():
        status, headers, body, _ = exchange(ctx.port, request)
        outcomes[name] = {"status": status, "ok": status == want and is_json_error(status, headers, body)}
    status, headers, _, _ = exchange(ctx.port, post("/predict/", host=b"Host: evil.example\r\n"))
    outcomes["trailing slash, foreign Host"] = {
        "status": status,
        "location": headers.get("location"),
        "ok": status == 404 and "location" not in headers,
    }
    metrics = http_get(ctx.server.url + "/metrics")[1].decode()
    counted = any(line.startswith('pulse_http_rejected_total{reason="malformed"') for line in metrics.splitlines())
    outcomes["HTTP-layer 400 counted in /metrics"] = {"ok": counted}
    return {"cases": outcomes, "ok": all(o["ok"] for o in outcomes.values())}


def startup_faults(ctx: Context) -> dict[str, Any]:
    """Files and settings that must end start-up with one line and exit 2, quickly and without a memory spike."""
    fifo = ctx.workdir / "log.fifo"
    os.mkfifo(fifo)
    sparse = ctx.workdir / "sparse.onnx"
    with open(sparse, "wb") as file:
        file.truncate(2 * 1024**3)
    model = str(ctx.server.log_path.parent / "model.onnx")
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "model is /dev/zero": (["--model", "/dev/zero"], {}),
        "model is a 2 GB sparse file": (["--model", str(sparse)], {}),
        "request log is a FIFO": (["--model", model], {"PULSE_REQUEST_LOG": str(fifo)}),
        "PULSE_PORT=65536": (["--model", model], {"PULSE_PORT": "65536"}),
        "30-digit PULSE_MAX_BODY_BYTES": (["--model", model], {"PULSE_MAX_BODY_BYTES": "9" * 30}),
    }
    outcomes = {}
    for name, (args, env) in cases.items():
        started = time.perf_counter()
        run = subprocess.run(
            ["/usr/bin/time", "-f", "%M", *python_command("-m", "server", *args)]
            if Path("/usr/bin/time").exists()
            else python_command("-m", "server", *args),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, **env},
        )
        lines = [line for line in run.stderr.strip().splitlines() if not line.startswith("Command exited")]
        peak_kb = int(lines.pop()) if lines and lines[-1].isdigit() else None
        outcomes[name] = {
            "exit_code": run.returncode,
            "message": lines[0] if len(lines) == 1 else lines,
            "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(peak_kb / 1024) if peak_kb else None,
            "ok": run.returncode == 2 and len(lines) == 1,
        }
    return {"cases": outcomes, "ok": all(o["ok"] for o in outcomes.values())}


CASES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "streamed_header": streamed_header,
    "many_headers": many_headers,
    "header_flood": header_flood,
    "idle_connections": idle_connections,
    "partial_header": partial_header,
    "partial_body": partial_body,
    "expect_without_body": expect_without_body,
    "held_bodies": held_bodies,
    "connection_flood": connection_flood,
    "batch_load_liveness": batch_load_liveness,
    "unechoable_inputs": unechoable_inputs,
    "framing_faults": framing_faults,
    "startup_faults": startup_faults,
}


# The fast mode's connection limits (server.http.fast): stock mode (PULSE_HTTP=stock) is uvicorn's own protocol,
# which has none of them; a proxy in front must bound heads, deadlines and connections there (docs/operations.md).
CONNECTION_CASES = frozenset(
    {
        "streamed_header",
        "many_headers",
        "header_flood",
        "idle_connections",
        "partial_header",
        "partial_body",
        "expect_without_body",
        "framing_faults",
    }
)


@contextlib.contextmanager
def _server(artifacts: Path, workdir: Path) -> Iterator[ServerProcess]:
    port = free_port()
    shutil.copy(artifacts / "model.onnx", workdir / "model.onnx")
    env = {
        "PULSE_HEADER_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "PULSE_BODY_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "PULSE_MAX_BATCH": "1000",
    }
    command = python_command(
        "-m", "server", "--model", str(workdir / "model.onnx"), "--port", str(port), "--log-level", "error"
    )
    with run_server(command, port, workdir / "server.log", env) as server:
        yield server


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("error: the hostile suite drives its batch load with wrk (apt-get install wrk)")
    size = FULL if args.full else Size()
    features = json.loads((args.artifacts / "metrics.json").read_text())["features"]
    table = pd.read_parquet(args.artifacts / "features.parquet")[features]
    row = table.head(1).to_json(orient="records")[1:-1].encode()
    batch = table.head(1000).to_json(orient="records").encode()
    workdir = Path(tempfile.mkdtemp(prefix="pulse-hostile-"))
    results: dict[str, Any] = {"size": asdict(size), "cases": {}}
    names = args.case or list(CASES)
    if os.environ.get("PULSE_HTTP") == "stock":
        skipped = sorted(CONNECTION_CASES.intersection(names))
        names = [name for name in names if name not in CONNECTION_CASES]
        print(f"PULSE_HTTP=stock: the fast mode's connection cases not run: {', '.join(skipped) or 'none'}")
        results["mode"] = "stock"
    try:
        with _server(args.artifacts, workdir) as server:
            ctx = Context(server, int(server.url.rsplit(":", 1)[1]), size, features, row, batch, workdir)
            for name in names:
                outcome = results["cases"][name] = run_case(server, name, partial(CASES[name], ctx))
                if not outcome["server_alive"]:
                    break
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["passed"] = all(case["ok"] for case in results["cases"].values())
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks hostile``."""
    parser = commands.add_parser(
        "hostile",
        help="hostile clients (oversized headers, idle and half-sent requests, floods) against a real server",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    parser.add_argument("--full", action="store_true", help="the attack's original size (several minutes)")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only this case (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/hostile.json"), help="JSON figures")
    parser.set_defaults(handler=main)


def run_case(server: ServerProcess, name: str, case: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One case against ``server``: its outcome (an exception is reported, not raised, so the rest still run) with
    the server's state after it — alive, RSS, descriptors, the in-flight gauge settled, which must be 0 — printed."""
    started = time.perf_counter()
    try:
        outcome = case()
    except Exception as exc:
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    alive = server.process.poll() is None
    outcome["server_alive"] = alive
    if alive:
        outcome["server_rss_mb"] = round(rss_mb(server.pid), 1)
        outcome["server_fds"] = descriptors(server.pid)
        outcome["in_flight_after"] = settled_in_flight(server.url)
    outcome["ok"] = bool(outcome["ok"] and alive and outcome.get("in_flight_after") == 0)
    outcome["case_seconds"] = round(time.perf_counter() - started, 1)
    print(f"{'ok  ' if outcome['ok'] else 'FAIL'} {name}: {json.dumps(outcome)}", flush=True)
    return outcome


def write_results(results: dict[str, Any], out: Path, suite: str) -> int:
    """The suite's figures as JSON at ``out``; its exit status."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{suite}: {'passed' if results['passed'] else 'FAILED'} -> {out}", flush=True)
    return 0 if results["passed"] else 1


def main(args: argparse.Namespace) -> int:
    return write_results(run(args), args.out, "hostile suite")
