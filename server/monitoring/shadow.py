"""A shadow model: a candidate scored on a sampled share of live rows after their answers, judged against the
served model on the same rows.

The request log's thread scores it (``server.monitoring.request_log``), so it never changes, delays or fails an
answer: a candidate that raises is counted, not propagated. Its figures (since it was set): rows, rows whose
decision at the served threshold agrees, the sum of |p_candidate - p_served|, both models' scores counted into ten
equal-width bins (PSI of the candidate's distribution against the served model's), and its onnxruntime time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.model.loader import Model, ModelError, load_model
from server.monitoring.drift import PSEUDO_COUNT, psi

logger = logging.getLogger(__name__)

SCORE_BINS = 10  # equal-width bins of [0, 1] for the two score distributions
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1)


def check_shadow(served: Model, candidate: Model) -> None:
    """A shadow scores the served model's rows as they are: it must take the same features, in the same order."""
    if candidate.info.features != served.info.features:
        raise ModelError(
            f"shadow model {candidate.info.version!r} takes the features {list(candidate.info.features)}; the served "
            f"model takes {list(served.info.features)}: a shadow scores the same rows, so they must be the same"
        )


def load_shadow(
    path: Path, sha256: str, served: Model, sample: float, max_bytes: int, follow_symlinks: bool = True
) -> Shadow:
    """The candidate at ``path`` through every start-up check the served model passes (size, sha256, metadata,
    golden rows, warm-up), and the feature check above. One onnxruntime thread: it runs beside the served model."""
    candidate = load_model(path, sha256, 1, max_bytes, follow_symlinks)
    check_shadow(served, candidate)
    return Shadow(candidate, sample)


class Shadow:
    """One candidate model and its running comparison with the served model."""

    def __init__(self, model: Model, sample: float) -> None:
        self.model = model
        self.sample = sample
        self.version = model.info.version
        self.sha256 = model.info.sha256
        self.rows = 0
        self.agreed = 0
        self.abs_diff = 0.0
        self.errors = 0
        self.served_bins = [0] * SCORE_BINS
        self.shadow_bins = [0] * SCORE_BINS
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_total = 0.0

    def score(
        self, X: npt.NDArray[np.float32], served: npt.NDArray[np.float32], threshold: float
    ) -> npt.NDArray[np.float32] | None:
        """The candidate's probabilities for rows the served model scored ``served``, counted into the comparison;
        ``None`` when the candidate failed (counted, logged once in a while)."""
        started = time.perf_counter()
        try:
            candidate = self.model.churn_probability(X)
        except Exception as exc:  # a shadow must never take the worker down with it
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                logger.warning("shadow model failed errors=%d reason=%s", self.errors, exc)
            return None
        seconds = time.perf_counter() - started
        self.latency_counts[int(np.searchsorted(LATENCY_BUCKETS, seconds))] += 1
        self.latency_total += seconds
        self.rows += len(X)
        self.agreed += int(((candidate >= threshold) == (served >= threshold)).sum())
        self.abs_diff += float(np.abs(candidate.astype(np.float64) - served).sum())
        for bins, scores in ((self.served_bins, served), (self.shadow_bins, candidate)):
            found = np.bincount(
                np.minimum((scores * SCORE_BINS).astype(np.int64), SCORE_BINS - 1), minlength=SCORE_BINS
            )
            for i, n in enumerate(found.tolist()):
                bins[i] += n
        return candidate

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "sha256": self.sha256,
            "sample": self.sample,
            "rows": self.rows,
            "agreed": self.agreed,
            "abs_diff": self.abs_diff,
            "errors": self.errors,
            "served_bins": self.served_bins,
            "shadow_bins": self.shadow_bins,
            "latency": [self.latency_counts, self.latency_total],
        }


def merged(snapshots: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The figures of every worker's shadow of the same candidate (the first snapshot's), summed; with the PSI of
    its score distribution against the served model's on the same rows."""
    if not snapshots:
        return None
    first = snapshots[0]
    same = [s for s in snapshots if s["sha256"] == first["sha256"]]
    total: dict[str, Any] = {
        "version": first["version"],
        "sha256": first["sha256"],
        "sample": first["sample"],
        "rows": sum(s["rows"] for s in same),
        "agreed": sum(s["agreed"] for s in same),
        "abs_diff": sum(s["abs_diff"] for s in same),
        "errors": sum(s["errors"] for s in same),
        "served_bins": [sum(column) for column in zip(*(s["served_bins"] for s in same), strict=True)],
        "shadow_bins": [sum(column) for column in zip(*(s["shadow_bins"] for s in same), strict=True)],
        "latency": [
            [sum(column) for column in zip(*(s["latency"][0] for s in same), strict=True)],
            sum(s["latency"][1] for s in same),
        ],
    }
    rows = total["rows"]
    # The served shares smoothed as psi() smooths the candidate's counts: the same distribution has a PSI of 0.
    smoothed = sum(total["served_bins"]) + PSEUDO_COUNT * SCORE_BINS
    reference = [(n + PSEUDO_COUNT) / smoothed for n in total["served_bins"]]
    total["psi"] = psi(total["shadow_bins"], reference) if rows else None
    total["agreement"] = total["agreed"] / rows if rows else None
    total["mean_abs_diff"] = total["abs_diff"] / rows if rows else None
    return total
