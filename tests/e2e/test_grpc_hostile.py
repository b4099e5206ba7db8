"""The gRPC hostile suite's CI size against a real server process (``python -m benchmarks grpc-hostile``): rapid
reset, stream floods past the connection's limit, half-open streams, oversized metadata, a ping flood and garbage
messages each get the bounded answer the case expects, while a liveness probe and a fresh ``ModelInfer`` on a new
channel are answered within a second throughout and the in-flight gauge comes back to 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_hostile_http2_clients_leave_the_grpc_door_answering(exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpc_hostile.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "grpc-hostile",
        "--artifacts",
        str(exported.parent),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    print(result.stdout)
    cases = json.loads(out.read_text())["cases"]
    failed = {name: case for name, case in cases.items() if not case["ok"]}
    assert not failed, json.dumps(failed, indent=1)[:4000]
    assert result.returncode == 0, result.stderr[-2000:]
    assert cases["stream_flood"]["reset"] > 0  # the stream limit, not luck, refused the flood
    assert cases["ping_flood"]["goaway"] == "ENHANCE_YOUR_CALM"  # too many pings: the connection is sent away
    assert cases["oversized_metadata"]["grpc_statuses"] == [8]  # RESOURCE_EXHAUSTED, not a hang or a crash
    assert cases["garbage_messages"]["grpc_status"] == {"3": 200}  # INVALID_ARGUMENT each, never INTERNAL
    for case in cases.values():
        assert case["health"]["probes"] > 0 and case["fresh_infer"]["calls"] > 0
        assert case["fresh_infer"]["refused"] == 0  # the CI size stays within every bound
