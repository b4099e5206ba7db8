"""Score the test set once: metrics at the tuned threshold and at 0.5, calibration, and the plots."""

from __future__ import annotations

import io
import logging
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display is ever needed

import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from common.classification import CALIBRATION_BINS, expected_calibration_error

logger = logging.getLogger(__name__)


def classification_metrics(y_true: npt.ArrayLike, y_proba: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 and the confusion matrix ``[[tn, fp], [fn, tp]]`` for ``p >= threshold``."""
    y_pred = np.asarray(y_proba) >= threshold
    return {
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[False, True]).tolist(),
    }


def test_metrics(y_true: npt.ArrayLike, y_proba: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """All test-set figures of the served model.

    PR-AUC is given for both classes (``pr_auc`` for churners, ``pr_auc_retained`` for those who stay): when churn
    is the majority the churners' figure mostly reflects the base rate. ``everyone_churns_f1`` is the F1 of the
    trivial rule that calls every user a churner, the floor a tuned threshold must clear.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_proba = np.asarray(y_proba, dtype=np.float64)
    rate = float(y_true.mean())
    called = y_proba >= threshold
    return {
        "roc_auc": float(roc_auc_score(y_true, y_proba)),
        "pr_auc": float(average_precision_score(y_true, y_proba)),
        "pr_auc_retained": float(average_precision_score(~y_true, 1.0 - y_proba)),
        "everyone_churns_f1": 2 * rate / (1 + rate),
        "predicted_churn_share": float(called.mean()),
        "retained_recall": float((~called[~y_true]).mean()) if (~y_true).any() else 1.0,
        **classification_metrics(y_true, y_proba, threshold),
        "brier": float(brier_score_loss(y_true, y_proba)),
        "calibration_error": expected_calibration_error(y_true, y_proba),
        "at_0.5": classification_metrics(y_true, y_proba, 0.5),
    }


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, then closed: plots are rendered in memory and written with the other artifacts."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plot_confusion_matrix(matrix: list[list[int]], threshold: float) -> bytes:
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(np.asarray(matrix)):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=13)
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["stays", "churns"],
        yticklabels=["stayed", "churned"],
        xlabel="predicted",
        ylabel="actual",
        title=f"Test confusion matrix (threshold {threshold:.3f})",
    )
    return png_bytes(fig)


def plot_roc(y_true: npt.ArrayLike, y_proba: npt.ArrayLike, baseline_proba: npt.ArrayLike) -> bytes:
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for name, proba in (("random forest", y_proba), ("logistic baseline", baseline_proba)):
        fpr, tpr, _ = roc_curve(y_true, proba)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y_true, proba):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test set")
    ax.legend(loc="lower right")
    return png_bytes(fig)


def plot_precision_recall(y_true: npt.ArrayLike, y_proba: npt.ArrayLike, threshold: float) -> bytes:
    precision, recall, _ = precision_recall_curve(y_true, y_proba)
    chosen = classification_metrics(y_true, y_proba, threshold)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot(recall, precision, label=f"AP {average_precision_score(y_true, y_proba):.3f}")
    ax.scatter(
        [chosen["recall"]],
        [chosen["precision"]],
        color="crimson",
        zorder=3,
        label=f"threshold {threshold:.3f} (tuned on validation)",
    )
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test set", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return png_bytes(fig)


def plot_feature_importance(names: list[str], importances: npt.ArrayLike) -> bytes:
    order = np.argsort(importances)
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    ax.barh(np.asarray(names)[order], np.asarray(importances)[order])
    ax.set(xlabel="mean decrease in impurity", title="Feature importance")
    return png_bytes(fig)


def plot_calibration(y_true: npt.ArrayLike, y_proba: npt.ArrayLike) -> bytes:
    observed, predicted = calibration_curve(y_true, y_proba, n_bins=CALIBRATION_BINS)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    ax.plot(predicted, observed, "o-", label="random forest")
    ax.set(xlabel="mean predicted probability", ylabel="observed churn rate", title="Calibration, test set")
    ax.legend(loc="upper left")
    return png_bytes(fig)


def plot_reference_histograms(X: pd.DataFrame) -> bytes:
    """One histogram per feature of the training data: the reference that drift reports compare against."""
    fig, axes = plt.subplots(1, X.shape[1], figsize=(3.2 * X.shape[1], 2.8))
    for ax, name in zip(np.atleast_1d(axes), X.columns, strict=True):
        ax.hist(X[name], bins=40, color="slategray")
        ax.set(title=name, yticks=[])
    fig.suptitle("Training features (drift reference)")
    return png_bytes(fig)
