"""``python -m benchmarks door`` drives the real connection, coalescer and pipeline, and every request is answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

from benchmarks.door import measure


def test_the_door_benchmark_answers_every_request_it_feeds(exported: Path) -> None:
    # measure() exits with an error when fewer answers were written than requests were fed.
    figures = asyncio.run(measure(exported.parent, connections=4, turns=20))
    assert figures["reading_us"] > 0 and figures["answering_us"] > 0
