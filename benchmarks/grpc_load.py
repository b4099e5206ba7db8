"""A gRPC load generator for the harness: ``ModelInfer`` calls at peak throughput, as wrk does for HTTP.

    python -m benchmarks.grpc_load --target 127.0.0.1:8001 --bodies a.bin b.bin --seconds 10 --concurrency 16

Each body file is one serialized ``ModelInferRequest``, sent in turn (no protobuf work in the loop). ``concurrency``
calls stay in flight on one HTTP/2 channel, as ``wrk -c 16`` keeps 16 requests in flight. It prints one line,
``JSON {...}``, in the shape of the harness's wrk script: requests, duration, errors, latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"


async def load(target: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict[str, int]:
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out
        await call(bodies[0])
        started = time.perf_counter()
        deadline = started + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            turn = offset
            while time.perf_counter() < deadline:
                body = bodies[turn % len(bodies)]
                turn += 1
                sent = time.perf_counter()
                try:
                    await call(body)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        duration = time.perf_counter() - started
    percentiles = np.percentile(np.array(latencies) * 1e6, [50, 95, 99]) if latencies else [0, 0, 0]
    return {
        "requests": len(latencies),
        "duration_us": int(duration * 1e6),
        "errors": errors,
        "non_2xx": 0,
        "p50_us": int(percentiles[0]),
        "p95_us": int(percentiles[1]),
        "p99_us": int(percentiles[2]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the gRPC listener")
    parser.add_argument("--bodies", nargs="+", type=Path, required=True, help="serialized ModelInferRequest files")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    bodies = [path.read_bytes() for path in args.bodies]
    stats = asyncio.run(load(args.target, bodies, args.seconds, args.concurrency))
    print("JSON " + json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
