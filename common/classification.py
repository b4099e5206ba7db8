"""How good probabilities are against realized labels, in numpy alone (the scorer imports no scikit-learn).

Each figure has the definition scikit-learn gives it, so the outcome report stands beside the model card's test
figures (computed by scikit-learn at training) like for like; ``tests/unit/test_outcome_metrics.py`` holds them
equal. The expected calibration error is defined here once, for both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

CALIBRATION_BINS = 10


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """Area under the ROC curve: the chance a random churner is scored above a random stayer (ties count half)."""
    y = np.asarray(y_true, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both churners and users who stayed")
    ranks = _average_ranks(np.asarray(y_score, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true: npt.ArrayLike, y_score: npt.ArrayLike) -> float:
    """PR-AUC as average precision: precision at each distinct score, weighted by the recall it adds."""
    y = np.asarray(y_true, dtype=bool)
    scores = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    y_sorted, s_sorted = y[order], scores[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    true_positives = np.cumsum(y_sorted)[last_of_each_score]
    called = last_of_each_score + 1
    if true_positives[-1] == 0:
        return 0.0
    precision = true_positives / called
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def expected_calibration_error(y_true: npt.ArrayLike, y_proba: npt.ArrayLike, n_bins: int = CALIBRATION_BINS) -> float:
    """Mean |observed churn rate - mean predicted probability| over equal-width bins, weighted by bin size."""
    bins = reliability(y_true, y_proba, n_bins)
    users = sum(b["users"] for b in bins)
    return float(sum(b["users"] / users * abs(b["observed"] - b["mean_predicted"]) for b in bins))


def reliability(y_true: npt.ArrayLike, y_proba: npt.ArrayLike, n_bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Per non-empty equal-width bin of the probability: users, mean predicted probability, observed churn rate."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_proba, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return [
        {
            "bin": [b / n_bins, (b + 1) / n_bins],
            "users": int((bins == b).sum()),
            "mean_predicted": float(p[bins == b].mean()),
            "observed": float(y[bins == b].mean()),
        }
        for b in np.unique(bins)
    ]


def at_threshold(y_true: npt.ArrayLike, y_proba: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """Precision, recall and F1 of ``p >= threshold`` (0 where undefined), and the share of users called."""
    y = np.asarray(y_true, dtype=bool)
    called = np.asarray(y_proba, dtype=np.float64) >= threshold
    tp, fp, fn = int((called & y).sum()), int((called & ~y).sum()), int((~called & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    tn = len(y) - tp - fp - fn
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "predicted_churn_share": float(called.mean()),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def brier(y_true: npt.ArrayLike, y_proba: npt.ArrayLike) -> float:
    """Mean squared difference between the probability and the 0/1 outcome."""
    return float(np.mean((np.asarray(y_proba, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)) ** 2))


# Performance estimated before the labels exist (confidence-based performance estimation, as NannyML's CBPE): each
# probability is taken as the chance that its user churns, so a group of scores with sum s over n rows holds s
# expected churners and n - s expected stayers. Valid while the model stays calibrated (its ECE says how well it is).
ESTIMATE_BINS = 200  # the server's window counts scores into this many equal-width bins of [0, 1]


def estimated_from_groups(
    counts: npt.ArrayLike, sums: npt.ArrayLike, flagged_rows: float, flagged_sum: float
) -> dict[str, float] | None:
    """Expected ROC-AUC, precision, recall and F1 from score groups in ascending order (``counts[g]`` rows whose
    scores sum to ``sums[g]``; scores in one group count as ties) and the rows at or above the threshold (how many,
    and their scores' sum). ``None`` when no churner or no stayer is expected."""
    n = np.asarray(counts, dtype=np.float64)
    positives = np.asarray(sums, dtype=np.float64)
    negatives = n - positives
    expected_churners, expected_stayers = positives.sum(), negatives.sum()
    if expected_churners <= 0 or expected_stayers <= 0:
        return None
    below = np.cumsum(negatives) - negatives  # expected stayers scored lower than each group
    auc = float((positives * (below + 0.5 * negatives)).sum() / (expected_churners * expected_stayers))
    precision = flagged_sum / flagged_rows if flagged_rows > 0 else 0.0
    recall = flagged_sum / expected_churners
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"roc_auc": auc, "precision": float(precision), "recall": float(recall), "f1": float(f1)}


class ScoreGroups:
    """Scores counted for :func:`estimated_from_groups`: rows and score sums in ``ESTIMATE_BINS`` equal-width bins
    of [0, 1], and the rows at or above ``threshold``. Constant memory, and groups of several parts add up."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.counts = np.zeros(ESTIMATE_BINS)
        self.sums = np.zeros(ESTIMATE_BINS)
        self.flagged_rows = 0.0
        self.flagged_sum = 0.0

    def add(self, y_proba: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> None:
        """Count scores (each ``weights[i]`` times: a sampled row stands for several)."""
        p = np.asarray(y_proba, dtype=np.float64)
        w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
        bins = np.clip((p * ESTIMATE_BINS).astype(np.int64), 0, ESTIMATE_BINS - 1)
        self.counts += np.bincount(bins, w, minlength=ESTIMATE_BINS)
        self.sums += np.bincount(bins, w * p, minlength=ESTIMATE_BINS)
        flagged = p >= self.threshold
        self.flagged_rows += float(w[flagged].sum())
        self.flagged_sum += float((w * p)[flagged].sum())

    def add_counts(self, counts: Any, sums: Any, flagged_rows: float, flagged_sum: float) -> None:
        self.counts += np.asarray(counts, dtype=np.float64)
        self.sums += np.asarray(sums, dtype=np.float64)
        self.flagged_rows += flagged_rows
        self.flagged_sum += flagged_sum

    @property
    def rows(self) -> float:
        return float(self.counts.sum())

    def estimate(self) -> dict[str, float] | None:
        return estimated_from_groups(self.counts, self.sums, self.flagged_rows, self.flagged_sum)

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts.tolist(),
            "sums": self.sums.tolist(),
            "flagged_rows": self.flagged_rows,
            "flagged_sum": self.flagged_sum,
        }
