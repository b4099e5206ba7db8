"""Sampled JSONL of request features and predicted probabilities, for drift reports.

Requests only put a reference on a bounded queue (never blocking); a background thread formats and appends
the lines. A full queue or a failing disk drops lines and counts them, it never fails a request.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import random
import stat
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

logger = logging.getLogger(__name__)

_STOP = None
# (time, rows, probabilities, top reasons, the model's features, the model's version)
_Entry = tuple[float, npt.NDArray[np.float32], npt.NDArray[np.float32], list[str] | None, tuple[str, ...], str]


class RequestLogError(ValueError):
    """The request log's path cannot be a log file; the message names it."""


def _writable_kind(mode: int) -> bool:
    # A regular file, or a character device such as /dev/null or /dev/full; a FIFO would block its writer for good.
    return stat.S_ISREG(mode) or stat.S_ISCHR(mode)


def check_request_log_path(path: Path | None) -> None:
    """A request log must be a regular file or a character device (or not exist yet)."""
    if path is not None and path.exists() and not _writable_kind(path.stat().st_mode):
        raise RequestLogError(f"request log {str(path)!r} (PULSE_REQUEST_LOG) is not a regular file")


def _open_for_append(path: Path) -> int:
    # Non-blocking, so a FIFO put there after start-up fails now instead of hanging the writer thread.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    if not _writable_kind(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


class RequestLog:
    def __init__(
        self, path: Path, features: tuple[str, ...], model_version: str, sample: float, max_queue: int
    ) -> None:
        self.path = path
        self.features = features
        self.model_version = model_version
        self.sample = sample
        # Each counter has one writer thread: the event loop counts a full queue, the writer thread the rest.
        self.written = 0
        self.dropped = 0
        self.failed_rows = 0
        self.errors = 0
        self._queue: queue.Queue[_Entry | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(
        self,
        X: npt.NDArray[np.float32],
        proba: npt.NDArray[np.float32],
        top_reasons: list[str] | None = None,
        model: tuple[tuple[str, ...], str] | None = None,
    ) -> None:
        """Queue the rows of one request (sampled), with each row's top reason when explanations were asked and
        the features and version of the model that scored them (the log's own by default); drop and count when
        the queue is full."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        features, version = model or (self.features, self.model_version)
        try:
            self._queue.put_nowait((time.time(), X, proba, top_reasons, features, version))
        except queue.Full:
            self.dropped += len(X)

    def for_model(self, features: tuple[str, ...], version: str) -> ModelLog:
        """This log, labelling lines with another model's features and version (after a model swap)."""
        return ModelLog(self, (features, version))

    def counters(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped + self.failed_rows, "write_errors": self.errors}

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _format(
        self,
        ts: float,
        X: npt.NDArray[np.float32],
        proba: npt.NDArray[np.float32],
        reasons: list[str] | None,
        features: tuple[str, ...],
        version: str,
    ) -> bytes:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
        lines = []
        for i, (row, p) in enumerate(zip(X.tolist(), proba.tolist(), strict=True)):
            record = {
                "ts": stamp,
                **dict(zip(features, row, strict=True)),
                "churn_probability": p,
                "model_version": version,
            }
            if reasons is not None:
                record["top_reason"] = reasons[i]
            lines.append(orjson.dumps(record))
        return b"\n".join(lines) + b"\n"

    def _run(self) -> None:
        fd: int | None = None
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            data = self._format(*item)
            try:
                if fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    fd = _open_for_append(self.path)
                os.write(fd, data)  # one append per request: lines from several workers do not interleave
                self.written += len(item[1])
            except OSError as exc:
                self.errors += 1
                self.failed_rows += len(item[1])
                if self.errors == 1 or self.errors % 1000 == 0:
                    logger.warning("request log write failed errors=%d reason=%s", self.errors, exc.strerror)
                if fd is not None:
                    os.close(fd)
                    fd = None
        if fd is not None:
            os.close(fd)


class ModelLog:
    """A :class:`RequestLog` bound to one model's features and version: what a served model writes through."""

    __slots__ = ("_log", "_model")

    def __init__(self, log: RequestLog, model: tuple[tuple[str, ...], str]) -> None:
        self._log = log
        self._model = model

    def submit(
        self, X: npt.NDArray[np.float32], proba: npt.NDArray[np.float32], top_reasons: list[str] | None = None
    ) -> None:
        self._log.submit(X, proba, top_reasons, self._model)
