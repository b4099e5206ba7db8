"""The outcome report's numpy metrics have scikit-learn's definitions (the model card's test figures use those)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from common import classification as metrics


@st.composite
def labeled_scores(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Labels with both classes and scores with many ties (forests give multiples of 1/n_trees)."""
    n = draw(st.integers(2, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = rng.random(n) < draw(st.floats(0.05, 0.95))
    y[0], y[1] = True, False
    levels = draw(st.sampled_from([3, 10, 1000]))
    return y, rng.integers(0, levels + 1, size=n) / levels


@given(labeled_scores())
def test_roc_auc_and_average_precision_match_scikit_learn(case: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = case
    assert metrics.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics.average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


@given(labeled_scores(), st.sampled_from([0.0, 0.3, 0.5, 0.999, 1.0]))
def test_threshold_figures_and_brier_match_scikit_learn(case: tuple[np.ndarray, np.ndarray], threshold: float) -> None:
    y, p = case
    got = metrics.at_threshold(y, p, threshold)
    called = p >= threshold
    assert got["precision"] == pytest.approx(precision_score(y, called, zero_division=0))
    assert got["recall"] == pytest.approx(recall_score(y, called, zero_division=0))
    assert got["f1"] == pytest.approx(f1_score(y, called, zero_division=0))
    assert got["predicted_churn_share"] == pytest.approx(called.mean())
    assert sum(map(sum, got["confusion_matrix"])) == len(y)
    assert metrics.brier(y, p) == pytest.approx(brier_score_loss(y, p))


def test_calibration_error_weighs_each_bin_by_its_users() -> None:
    # Bin [0.1, 0.2): 3 users predicted 0.1, one churned (observed 1/3); bin [0.9, 1]: 1 user at 0.9 who churned.
    y = np.array([1, 0, 0, 1])
    p = np.array([0.1, 0.1, 0.1, 0.9])
    assert metrics.expected_calibration_error(y, p) == pytest.approx(3 / 4 * abs(1 / 3 - 0.1) + 1 / 4 * 0.1)
    bins = metrics.reliability(y, p)
    assert [(b["users"], b["bin"]) for b in bins] == [(3, [0.1, 0.2]), (1, [0.9, 1.0])]


def test_roc_auc_refuses_a_single_class() -> None:
    with pytest.raises(ValueError, match="both churners and users who stayed"):
        metrics.roc_auc(np.ones(4, bool), np.linspace(0, 1, 4))


def test_the_estimate_before_labels_by_hand() -> None:
    from common.classification import ScoreGroups, estimated_from_groups

    # Scores 0.2 and 0.9: 1.1 expected churners (0.2 + 0.9) and 0.9 expected stayers (0.8 + 0.1). Each group's
    # churner mass is set against the stayer mass scored below it, plus half of its own group's (scores in one group
    # are ties; a group of one counts its user against itself too, which thousands of rows make negligible):
    # (0.2 x (0 + 0.8 / 2) + 0.9 x (0.8 + 0.1 / 2)) / (1.1 x 0.9).
    found = estimated_from_groups([1, 1], [0.2, 0.9], flagged_rows=1, flagged_sum=0.9)
    assert found is not None
    assert found["roc_auc"] == pytest.approx((0.2 * 0.4 + 0.9 * (0.8 + 0.05)) / (1.1 * 0.9))
    assert found["precision"] == pytest.approx(0.9) and found["recall"] == pytest.approx(0.9 / 1.1)
    groups = ScoreGroups(threshold=0.5)
    groups.add([0.2, 0.9])
    assert groups.estimate() == pytest.approx(found)
    assert estimated_from_groups([2], [0.0], 0, 0) is None  # no expected churner: undefined
