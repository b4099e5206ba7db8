"""Threshold tuning, forest selection and the honesty of the split."""

from __future__ import annotations

import numpy as np
import pytest

from train.fit import tune_threshold


def test_threshold_sits_between_distinct_scores_and_keeps_decisions() -> None:
    rng = np.random.default_rng(0)
    y_proba = np.round(rng.random(500), 2)  # many ties, as a forest's scores have
    y_true = rng.random(500) < y_proba
    choice = tune_threshold(y_true, y_proba)
    assert not np.isin(choice.threshold, y_proba)
    scores = np.unique(y_proba)
    below, above = scores[scores < choice.threshold].max(), scores[scores > choice.threshold].min()
    assert choice.threshold == pytest.approx((below + above) / 2)
    predicted = y_proba >= choice.threshold
    tp = (predicted & y_true).sum()
    assert choice.best_f1 == pytest.approx(2 * tp / (predicted.sum() + y_true.sum()))
    assert not choice.degenerate


def test_threshold_maximizes_f1_on_a_separable_case() -> None:
    y_proba = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y_true = np.array([0, 0, 0, 1, 1, 1])
    choice = tune_threshold(y_true, y_proba)
    assert 0.3 < choice.threshold < 0.7
    assert choice.best_f1 == 1.0


def test_degenerate_threshold_is_reported() -> None:
    # Churn is the majority and the scores do not separate: the best F1 labels everyone churned.
    y_proba = np.array([0.5, 0.5, 0.6, 0.6, 0.6, 0.6])
    y_true = np.array([1, 1, 1, 1, 0, 1])
    choice = tune_threshold(y_true, y_proba)
    assert choice.degenerate
    assert choice.threshold < y_proba.min()
