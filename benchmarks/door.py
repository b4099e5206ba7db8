"""What the fast door's Python costs per single-row request, with no socket and no event loop in the way.

    python -m benchmarks door [--artifacts artifacts] [--connections 16] [--turns 3000]

The harness (``benchmarks run``) measures the whole server under wrk: kernel, event loop and Python together. This
isolates the Python: ``connections`` connections of the real :class:`~server.http.fast.protocol.Connection`, each
over a transport that only counts what it is given, each fed one whole ``POST /predict`` per turn, then the turn
answered by the real coalescer and pipeline (one onnxruntime call for the turn's rows). It prints microseconds per
request for reading (parser callbacks, the head's checks, the hand-off) and for answering (parse, validate, score,
render, count, frame), medians over rounds. Beside the harness's figure for the same server it tells how much of a
request is ours and how much the kernel's and the loop's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from server.config.settings import Settings
from server.http.app import create_app
from server.http.fast.listener import Lifespan, Worker
from server.http.fast.protocol import Connection

ROUNDS = 7


class CountingTransport(asyncio.Transport):
    """A transport that keeps nothing: the bytes written are counted, the rest is a no-op."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


def request_bytes(artifacts: Path) -> bytes:
    """One wrk-like request for the first golden row."""
    golden = json.loads((artifacts / "golden_rows.json").read_text())
    body = json.dumps(dict(zip(golden["features"], golden["inputs"][0], strict=True))).encode()
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def measure(artifacts: Path, connections: int, turns: int) -> dict[str, float]:
    settings = Settings(model_path=artifacts / "model.onnx", log_level="warning")
    app = create_app(settings)
    lifespan = Lifespan(app)
    if not await lifespan.startup():
        raise SystemExit(f"start-up failed: {lifespan.error}")
    worker = Worker(settings, app, lifespan.state, ("127.0.0.1", 8000))
    transports = [CountingTransport() for _ in range(connections)]
    conns = []
    for transport in transports:
        connection = Connection(worker)
        connection.connection_made(transport)
        conns.append(connection)
    request = request_bytes(artifacts)
    reading: list[float] = []
    answering: list[float] = []
    for round_index in range(ROUNDS + 1):
        read = answer = 0.0
        for _ in range(turns):
            started = time.perf_counter()
            for connection in conns:
                connection.data_received(request)
            parsed = time.perf_counter()
            worker.coalescer.answer_all()
            answer += time.perf_counter() - parsed
            read += parsed - started
        if round_index > 0:  # the first round warms up
            reading.append(read / (turns * connections) * 1e6)
            answering.append(answer / (turns * connections) * 1e6)
    answered = sum(transport.writes for transport in transports)
    await lifespan.shutdown()
    if answered != (ROUNDS + 1) * turns * connections:
        raise SystemExit(f"{answered} answers written for {(ROUNDS + 1) * turns * connections} requests")
    return {"reading_us": statistics.median(reading), "answering_us": statistics.median(answering)}


def add_parser(commands: Any) -> None:
    """``python -m benchmarks door``."""
    parser = commands.add_parser(
        "door",
        help="the fast door's Python per single-row request, in-process (no socket, no event loop)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    parser.add_argument("--connections", type=int, default=16, help="connections, one request each per turn")
    parser.add_argument("--turns", type=int, default=3000, help="turns per round")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    figures = asyncio.run(measure(args.artifacts, args.connections, args.turns))
    total = figures["reading_us"] + figures["answering_us"]
    print(
        f"single-row /predict, {args.connections} requests a turn, in-process: reading {figures['reading_us']:.2f} us "
        f"+ answering {figures['answering_us']:.2f} us = {total:.2f} us of Python per request "
        f"(median of {ROUNDS} rounds)"
    )
    return 0
