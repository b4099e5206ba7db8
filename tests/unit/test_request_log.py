"""The request log writes JSONL in the background and never fails or blocks a request."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from server.monitoring.request_log import RequestLog, RequestLogError, check_request_log_path

FEATURES = ("a", "b")


def _rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.linspace(0, 1, n, dtype=np.float32)


def test_lines_hold_features_and_probability(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "logs" / "requests.jsonl", FEATURES, "v1", sample=1.0, max_queue=10)
    log.start()
    log.submit(*_rows(3))
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "logs" / "requests.jsonl").read_text().splitlines()]
    assert [(r["a"], r["b"], r["churn_probability"], r["model_version"]) for r in lines] == [
        (0.0, 1.0, 0.0, "v1"),
        (2.0, 3.0, 0.5, "v1"),
        (4.0, 5.0, 1.0, "v1"),
    ]
    assert all(r["ts"].endswith("Z") for r in lines)
    assert log.counters() == {"written": 3, "dropped": 0, "write_errors": 0}


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "r.jsonl", FEATURES, "v1", sample=1.0, max_queue=2)  # thread not started
    for _ in range(5):
        log.submit(*_rows(4))
    assert log.dropped == 12


def test_an_unwritable_path_counts_errors_and_keeps_going(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = RequestLog(blocker / "r.jsonl", FEATURES, "v1", sample=1.0, max_queue=10)
    log.start()
    for _ in range(3):
        log.submit(*_rows(2))
    log.close()
    assert log.counters() == {"written": 0, "dropped": 6, "write_errors": 3}


def test_a_fifo_is_refused_at_start_up_and_never_blocks_the_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "requests.fifo"
    os.mkfifo(fifo)
    with pytest.raises(RequestLogError, match="is not a regular file"):
        check_request_log_path(fifo)
    check_request_log_path(tmp_path / "not-yet.jsonl")  # a file start-up will create is fine
    log = RequestLog(fifo, FEATURES, "v1", sample=1.0, max_queue=10)  # a FIFO put there after start-up
    log.start()
    log.submit(*_rows(2))
    log.close(timeout=5)
    assert not log._thread.is_alive()  # opening a FIFO with no reader used to block this thread for good
    assert log.counters() == {"written": 0, "dropped": 2, "write_errors": 1}


def test_sampling_keeps_about_the_asked_share(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "r.jsonl", FEATURES, "v1", sample=0.1, max_queue=100_000)
    for _ in range(5000):
        log.submit(*_rows(1))
    assert 300 < log._queue.qsize() < 700
