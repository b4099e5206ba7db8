"""Live drift: every scored row is counted into the reference bins that export wrote into the model, over a
sliding window of time slots, and ``/metrics`` reports the Population Stability Index of each feature and of the
predicted probability against the training shares.

The request path only appends the row to a pending list (``add``, ``add_batch``: well under a microsecond); the
binning happens in batches, with numpy, when the worker's metrics tick or a scrape calls ``drain``. A batch of more
than 128 rows is counted through a systematic sample of about 128 of its rows (random start, each sampled row
counting for the rows it stands for): PSI needs shares, not every row, and binning every row of a 1000-row batch
cost a fifth of what onnxruntime spends scoring it. The window is
a ring of ``slots`` counters of ``slot_seconds`` each, keyed by wall-clock slot number, so that rings of several
worker processes merge by slot; a row counts in the slot current when it is drained (at most one tick later).

PSI = sum_i (c_i - r_i) * ln(c_i / r_i) over the bins, with ``c`` the window's shares and ``r`` the training
shares. Smoothing: half a row is added to every bin of the window (Jeffreys), and training shares are floored at
1e-4, so an empty bin costs a finite amount. Below ``min_rows`` rows in the window nothing is reported.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from common.classification import ESTIMATE_BINS, ScoreGroups
from common.model.reference import Column

REFERENCE_FLOOR = 1e-4
PSEUDO_COUNT = 0.5
SAMPLE_ROWS = 128  # a larger batch is counted through a systematic sample of about this many rows
MAX_PENDING = 100_000  # queued rows before a drain is forced on the request path
DRAIN_SECONDS = 0.1  # how often queued rows are counted: short pauses (well under 1 ms at 20,000 rows/s)


def psi(counts: Sequence[float], reference: Sequence[float]) -> float:
    """Population Stability Index of window ``counts`` against reference shares, smoothed as stated above."""
    total = sum(counts) + PSEUDO_COUNT * len(counts)
    value = 0.0
    for count, share in zip(counts, reference, strict=True):
        current = (count + PSEUDO_COUNT) / total
        expected = max(share, REFERENCE_FLOOR)
        value += (current - expected) * math.log(current / expected)
    return value


class DriftWindow:
    """One worker's sliding window of bin counts; ``merge`` combines the windows of several workers."""

    def __init__(
        self, columns: list[Column], slots: int, slot_seconds: float, threshold: float = 0.5, seed: int | None = None
    ) -> None:
        self.columns = columns
        self.threshold = threshold  # the served one: estimated precision and recall are at it
        self._sampler = random.Random(seed)  # where a large batch's sample starts (a seed makes it repeatable)
        self.slots = slots
        self.slot_seconds = slot_seconds
        self._edges = [np.asarray(c.edges, dtype=np.float64) for c in columns]
        self._slot_ids = [-1] * slots
        self._counts = [[[0] * (len(c.edges) + 1) for c in columns] for _ in range(slots)]
        self._rows = [0] * slots
        # Per slot, for the performance estimate: rows and score sums per score bin, rows and score sum flagged.
        self._scores = [ScoreGroups(threshold) for _ in range(slots)]
        self._pending_values: list[float] = []
        self._pending_probabilities: list[float | np.floating[Any]] = []
        # (rows, probabilities, how many rows each stands for, how many rows the batch had)
        self._pending_batches: list[tuple[npt.NDArray[Any], npt.NDArray[Any], int, int]] = []

    def _slot(self, now: float) -> int:
        slot_id = int(now // self.slot_seconds)
        index = slot_id % self.slots
        if self._slot_ids[index] != slot_id:  # a new slot: what it held has left the window
            self._slot_ids[index] = slot_id
            self._counts[index] = [[0] * (len(e) + 1) for e in self._edges]
            self._rows[index] = 0
            self._scores[index] = ScoreGroups(self.threshold)
        return index

    def add(self, values: list[float], probability: float | np.floating[Any]) -> None:
        """Queue one scored row (features in model order) and its probability, to be counted at the next drain."""
        self._pending_values.extend(values)  # one flat list: a cheap append now, one fast array at the drain
        self._pending_probabilities.append(probability)
        if len(self._pending_probabilities) >= MAX_PENDING:  # the tick is late: count now, do not grow unbounded
            self.drain()

    def add_batch(self, X: npt.NDArray[np.float32], probabilities: npt.NDArray[np.float32]) -> None:
        """Queue a batch of scored rows (a sample of about ``SAMPLE_ROWS`` of them, for a larger batch)."""
        n = len(X)
        step = -(-n // SAMPLE_ROWS)
        if step > 1:
            start = self._sampler.randrange(step)
            X, probabilities = X[start::step], probabilities[start::step]
        self._pending_batches.append((X, probabilities, step, n))
        if len(self._pending_batches) >= MAX_PENDING // 100:
            self.drain()

    def drain(self) -> None:
        """Count every queued row into the current slot, all in one batch (a count costs the same for 10 rows as
        for 10,000: one searchsorted and one bincount per column)."""
        parts, self._pending_batches = self._pending_batches, []
        if self._pending_probabilities:
            values, singles = self._pending_values, self._pending_probabilities
            self._pending_values, self._pending_probabilities = [], []
            rows_of_singles = np.array(values, dtype=np.float64).reshape(len(singles), -1)
            parts.append((rows_of_singles, np.array(singles, dtype=np.float64), 1, len(singles)))
        if not parts:
            return
        rows = sum(n for _, _, _, n in parts)
        if all(step == 1 for _, _, step, _ in parts):
            weights = None
        else:
            weights = np.concatenate([np.full(len(X), step, dtype=np.float64) for X, _, step, _ in parts])
        X = np.concatenate([X for X, _, _, _ in parts]) if len(parts) > 1 else parts[0][0]
        probabilities = np.concatenate([p for _, p, _, _ in parts]) if len(parts) > 1 else parts[0][1]
        self.count_batch(X, probabilities, weights, rows)

    def count_batch(
        self,
        X: npt.NDArray[Any],
        probabilities: npt.NDArray[Any],
        weights: npt.NDArray[np.float64] | None = None,
        rows: int | None = None,
    ) -> None:
        """Count the rows of a batch (each row counting ``weights[i]`` times; ``rows`` the rows they stand for):
        one searchsorted and one bincount per column."""
        index = self._slot(time.time())
        counts = self._counts[index]
        columns = np.empty((X.shape[1] + 1, len(X)), dtype=np.float64)  # contiguous rows: fast searchsorted
        columns[:-1] = X.T
        columns[-1] = probabilities
        for j, (edges, column) in enumerate(zip(self._edges, columns, strict=True)):
            bins = np.searchsorted(edges, column, side="right")
            found = np.bincount(bins, weights, minlength=len(edges) + 1)
            counts[j] = [a + int(b) for a, b in zip(counts[j], found.tolist(), strict=True)]
        self._rows[index] += len(X) if rows is None else rows
        self._scores[index].add(columns[-1], weights)

    def snapshot(self) -> dict[str, Any]:
        """The ring as JSON-ready data (after counting what is queued), for another process to merge."""
        self.drain()
        return {
            "slot_ids": self._slot_ids,
            "counts": self._counts,
            "rows": self._rows,
            "scores": [g.as_dict() for g in self._scores],
        }

    def same_bins(self, snapshot: dict[str, Any]) -> bool:
        """Whether ``snapshot`` counts into bins shaped as this window's (one count list per column, each its
        column's edges + 1 long, in every slot)."""
        shape = [len(e) + 1 for e in self._edges]
        return all([len(column) for column in slot] == shape for slot in snapshot["counts"])

    def merged(self, snapshots: Iterable[dict[str, Any]], now: float) -> tuple[int, list[list[int]]]:
        """Rows and per-column bin counts inside the window ending now, over every snapshot given."""
        newest = int(now // self.slot_seconds)
        live = range(newest - self.slots + 1, newest + 1)
        rows = 0
        totals = [[0] * (len(e) + 1) for e in self._edges]
        for snapshot in snapshots:
            if not self.same_bins(snapshot):  # another model's window: its bins are not these (a swap under way)
                continue
            for slot_id, counts, n in zip(snapshot["slot_ids"], snapshot["counts"], snapshot["rows"], strict=True):
                if slot_id in live:
                    rows += n
                    for total, column in zip(totals, counts, strict=True):
                        for i, c in enumerate(column):
                            total[i] += c
        return rows, totals

    def estimate(self, snapshots: Iterable[dict[str, Any]], now: float, min_rows: int) -> dict[str, float] | None:
        """ROC-AUC, precision, recall and F1 expected from the window's scores (CBPE: see
        :func:`common.classification.estimated_from_groups`); ``None`` below ``min_rows`` rows."""
        newest = int(now // self.slot_seconds)
        live = range(newest - self.slots + 1, newest + 1)
        groups = ScoreGroups(self.threshold)
        for snapshot in snapshots:
            for slot_id, scores in zip(snapshot["slot_ids"], snapshot.get("scores", ()), strict=False):
                if slot_id in live and len(scores["counts"]) == ESTIMATE_BINS:
                    groups.add_counts(scores["counts"], scores["sums"], scores["flagged_rows"], scores["flagged_sum"])
        return groups.estimate() if groups.rows >= min_rows else None

    def report(self, snapshots: Iterable[dict[str, Any]], now: float, min_rows: int) -> dict[str, Any]:
        """Window rows, the PSI of each column (``None`` below ``min_rows`` rows: noise, not drift), and the
        performance estimate."""
        snapshots = list(snapshots)
        rows, totals = self.merged(snapshots, now)
        values = {
            c.name: (psi(counts, c.shares) if rows >= min_rows else None)
            for c, counts in zip(self.columns, totals, strict=True)
        }
        return {"rows": rows, "psi": values, "estimate": self.estimate(snapshots, now, min_rows)}
