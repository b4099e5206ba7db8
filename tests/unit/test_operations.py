"""The multi-worker guarantees, one by one, below the HTTP layer: swaps in one total order, metric snapshots per
worker life, drift windows merged per model, a metrics tick that survives its own errors."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from common.model.reference import PREDICTION, Column
from server.http.app import _metrics_tick
from server.monitoring.drift import DriftWindow
from server.monitoring.metrics import Metrics
from server.ops.control import CONTROL_FILE, clear_folder, read_control, write_control

WRITERS, WRITES = 8, 25


def _write_many(folder: str, writer: int) -> list[int]:
    return [write_control(Path(folder), Path(f"m{writer}.onnx"), f"{writer}", False).generation for _ in range(WRITES)]


def test_concurrent_swaps_get_distinct_generations_in_one_order(tmp_path: Path) -> None:
    """Eight processes asking for swaps at once: every ask gets its own generation, none is lost, and the record
    holds the last one (read-increment-write without the lock hands out duplicates here)."""
    with multiprocessing.get_context("fork").Pool(WRITERS) as pool:
        per_writer = pool.starmap(_write_many, [(str(tmp_path), writer) for writer in range(WRITERS)])
    generations = sorted(g for gens in per_writer for g in gens)
    assert generations == list(range(1, WRITERS * WRITES + 1))
    assert all(gens == sorted(gens) for gens in per_writer)  # each writer's asks in its own order
    latest = read_control(tmp_path)
    assert latest is not None and latest.generation == WRITERS * WRITES


def test_a_reused_folder_is_cleared_and_a_broken_record_reads_as_none(tmp_path: Path) -> None:
    write_control(tmp_path, Path("old.onnx"), "abc", False)
    (tmp_path / "worker-1-2.json").write_bytes(b"{}")
    clear_folder(tmp_path)
    assert read_control(tmp_path) is None and not list(tmp_path.glob("worker-*"))
    (tmp_path / CONTROL_FILE).write_bytes(b'{"generation": "x"')
    assert read_control(tmp_path) is None


def _snapshot_of(metrics: Metrics, **changes: Any) -> dict[str, Any]:
    return {**metrics.snapshot(), **changes}


def test_a_reused_pid_neither_overwrites_a_dead_life_nor_counts_as_live(tmp_path: Path) -> None:
    """A worker that died had this process's pid (a different start time): its counters stay in the totals and it
    is not counted as a live worker."""
    metrics = Metrics(tmp_path)
    dead = _snapshot_of(metrics, start=(metrics.start or 0) - 1000, requests=[["/predict", 200, 40]])
    dead_path = tmp_path / f"worker-{metrics.pid}-{dead['start']}.json"
    dead_path.write_bytes(orjson.dumps(dead))
    metrics.observe_request("/predict", 200, 0.001)
    metrics.flush()
    assert dead_path.exists() and len(list(tmp_path.glob("worker-*.json"))) == 2
    text = metrics.render().decode()
    assert 'pulse_http_requests_total{route="/predict",status="200"} 41.0' in text
    assert "pulse_workers 1.0" in text
    assert f'pulse_worker_http_requests_total{{pid="{metrics.pid}"}} 41.0' in text  # one label per pid


def _window(n_edges: int) -> DriftWindow:
    edges = tuple(np.linspace(1, 10, n_edges).tolist())
    feature = Column("total_events", edges, (1 / (n_edges + 1),) * (n_edges + 1))
    return DriftWindow([feature, Column(PREDICTION, (0.5,), (0.5, 0.5))], slots=10, slot_seconds=60)


def test_drift_windows_of_another_model_are_not_merged(tmp_path: Path) -> None:
    """Two workers serving two models whose bins differ (a swap under way): each worker's /metrics merges only
    the windows of its own model, and renders (a merge across models raised, or misaligned the PSI)."""
    mine, theirs = Metrics(tmp_path), Metrics(tmp_path)
    theirs.pid, theirs.start = os.getppid(), None  # another live process
    mine.info, theirs.info = {"version": "a", "sha256": "a" * 64}, {"version": "b", "sha256": "b" * 64}
    mine.drift, theirs.drift = _window(9), _window(4)
    mine.min_drift_rows = theirs.min_drift_rows = 1
    mine.drift.add_batch(np.full((30, 1), 3, dtype=np.float32), np.full(30, 0.5, dtype=np.float32))
    theirs.drift.add_batch(np.full((50, 1), 3, dtype=np.float32), np.full(50, 0.5, dtype=np.float32))
    theirs.flush()
    text = mine.render().decode()
    assert "pulse_drift_window_rows 30.0" in text  # its own rows only
    assert 'pulse_model_info{sha256="' + "b" * 64 in text
    # And a window never merges a snapshot whose bins are shaped otherwise, whatever the caller passes.
    window = _window(9)
    assert window.merged([_window(4).snapshot()], 0.0) == (0, [[0] * 10, [0] * 2])


def test_the_metrics_tick_survives_an_error_and_keeps_flushing(tmp_path: Path) -> None:
    """One exception (a swap-following step that raised) used to end the tick for good: no more swaps followed,
    no more snapshots written."""
    metrics = Metrics(tmp_path)
    calls = {"polls": 0}

    class Swapper:
        def poll_control(self) -> None:
            calls["polls"] += 1
            if calls["polls"] == 1:
                raise RuntimeError("a model file vanished")

    async def run() -> None:
        tick = asyncio.create_task(_metrics_tick(metrics, 0.05, Swapper()))  # type: ignore[arg-type]
        async with asyncio.timeout(30):  # the tick goes on after the error: two more polls come, however slow the day
            while calls["polls"] < 3:
                await asyncio.sleep(0.01)
        tick.cancel()

    asyncio.run(run())
    assert calls["polls"] >= 3
    assert list(tmp_path.glob("worker-*.json"))
