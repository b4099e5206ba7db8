"""What happens to an answer after it is given: the request log (JSONL of each row's features, caller id, probability,
decision and top reason) and the shadow model's scoring of a sample of the same rows.

Requests only put a reference on a bounded queue (never blocking); a background thread scores the shadow, formats
and appends the lines. A full queue or a failing disk drops lines and counts them, a failing shadow is counted:
neither ever fails, delays or changes an answer. One random draw per request decides both samples, so with the
shadow's share at most the log's, every row the shadow scored is logged with both scores.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from server.monitoring.log_file import NO_ROTATION, LogFile, Rotation
from server.monitoring.shadow import Shadow

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelTag:
    """What a line says of the model that scored it."""

    features: tuple[str, ...]
    version: str
    threshold: float


@dataclass(slots=True)
class _Entry:
    ts: float
    X: npt.NDArray[np.float32]
    proba: npt.NDArray[np.float32]
    model: ModelTag
    reasons: list[str] | None
    ids: Sequence[str | int | None] | None
    request_id: str | None
    log: bool  # sampled for the log
    shadow: Shadow | None  # sampled for this shadow
    trace_ids: Sequence[str | None] | None = None  # per row: the trace of its request, when it was traced


class RequestLog:
    """One worker's after-answer thread: a log file (``PULSE_REQUEST_LOG``), a shadow (``PULSE_SHADOW_MODEL``,
    ``POST /admin/shadow``), or both."""

    def __init__(self, path: Path | None, sample: float, max_queue: int, rotation: Rotation = NO_ROTATION) -> None:
        self.file = LogFile(path, rotation) if path is not None else None
        self.sample = sample if path is not None else 0.0
        self.shadow: Shadow | None = None  # replaced whole by the admin route; read once per request
        # Each counter has one writer thread: the event loop counts a full queue, the writer thread the rest.
        self.written = 0
        self.dropped = 0
        self.shadow_dropped = 0
        self.failed_rows = 0
        self.errors = 0
        self._queue: queue.Queue[_Entry | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def for_model(self, tag: ModelTag) -> ModelLog:
        """This log, labelling lines with the model that scored them (each served model has its own)."""
        return ModelLog(self, tag)

    def submit(
        self,
        X: npt.NDArray[np.float32],
        proba: npt.NDArray[np.float32],
        model: ModelTag,
        reasons: list[str] | None = None,
        ids: Sequence[str | int | None] | None = None,
        request_id: str | None = None,
        trace_ids: Sequence[str | None] | None = None,
    ) -> None:
        """Queue the rows of one request, when sampled for the log or the shadow; drop and count when the queue is
        full."""
        shadow = self.shadow
        draw = random.random()
        log = draw < self.sample
        if shadow is not None and draw >= shadow.sample:
            shadow = None
        if not log and shadow is None:
            return
        try:
            entry = _Entry(time.time(), X, proba, model, reasons, ids, request_id, log, shadow, trace_ids)
            self._queue.put_nowait(entry)
        except queue.Full:
            if log:
                self.dropped += len(X)
            if shadow is not None:
                self.shadow_dropped += len(X)

    def counters(self) -> dict[str, int]:
        found = {
            "written": self.written,
            "dropped": self.dropped + self.failed_rows,
            "write_errors": self.errors,
            "shadow_dropped": self.shadow_dropped,
        }
        if self.file is not None:
            found["rotations"] = self.file.rotations
        return found

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued within ``timeout`` seconds, then stop the thread; what is still queued then is
        counted as dropped (review M7: it died with the thread, uncounted)."""
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return
        left = 0
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not None:
                left += len(entry.X) if entry.log else 0
        self.dropped += left
        if left:
            logger.warning("request log closed with %d rows unwritten (counted as dropped)", left)

    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                break
            candidate = None
            if entry.shadow is not None:
                candidate = entry.shadow.score(entry.X, entry.proba, entry.model.threshold)
            if entry.log and self.file is not None:
                self._write(entry, candidate)
        if self.file is not None:
            self.file.close()

    def _write(self, entry: _Entry, candidate: npt.NDArray[np.float32] | None) -> None:
        assert self.file is not None
        try:
            self.file.write(format_lines(entry, candidate))  # one append per request: workers' lines never mix
            self.written += len(entry.X)
        except OSError as exc:
            self.errors += 1
            self.failed_rows += len(entry.X)
            if self.errors == 1 or self.errors % 1000 == 0:
                logger.warning("request log write failed errors=%d reason=%s", self.errors, exc.strerror)
            self.file.close()


def format_lines(entry: _Entry, candidate: npt.NDArray[np.float32] | None) -> bytes:
    """The request's rows as JSON lines."""
    ts = entry.ts
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
    model, shadow = entry.model, entry.shadow
    shadow_scores = candidate.tolist() if candidate is not None else None
    lines = []
    for i, (row, p) in enumerate(zip(entry.X.tolist(), entry.proba.tolist(), strict=True)):
        record: dict[str, Any] = {"ts": stamp}
        if entry.ids is not None and entry.ids[i] is not None:
            record["id"] = entry.ids[i]
        if entry.trace_ids is not None and entry.trace_ids[i] is not None:
            record["trace_id"] = entry.trace_ids[i]  # joins the line to the request's trace
        if i == 0 and entry.request_id is not None:  # once per request: its first row's line carries it
            record["request_id"] = entry.request_id
            record["request_rows"] = len(entry.X)
        record.update(zip(model.features, row, strict=True))
        record["churn_probability"] = p
        record["churn"] = p >= model.threshold
        record["threshold"] = model.threshold
        record["model_version"] = model.version
        if entry.reasons is not None:
            record["top_reason"] = entry.reasons[i]
        if shadow_scores is not None and shadow is not None:
            record["shadow_probability"] = shadow_scores[i]
            record["shadow_model_version"] = shadow.version
        lines.append(orjson.dumps(record))
    return b"\n".join(lines) + b"\n"


class ModelLog:
    """A :class:`RequestLog` bound to one served model: what the pipeline submits through."""

    __slots__ = ("_log", "_tag")

    def __init__(self, log: RequestLog, tag: ModelTag) -> None:
        self._log = log
        self._tag = tag

    @property
    def active(self) -> bool:
        """Whether anything follows an answer (a log file, a shadow): the pipeline builds nothing for it otherwise."""
        return self._log.sample > 0.0 or self._log.shadow is not None

    def submit(
        self,
        X: npt.NDArray[np.float32],
        proba: npt.NDArray[np.float32],
        reasons: list[str] | None = None,
        ids: Sequence[str | int | None] | None = None,
        request_id: str | None = None,
        trace_ids: Sequence[str | None] | None = None,
    ) -> None:
        self._log.submit(X, proba, self._tag, reasons, ids, request_id, trace_ids)
