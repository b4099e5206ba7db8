"""Split, choose the forest's size by cross-validation, tune the decision threshold, fit the served model.

Everything here sees the training part of the split only; the test part is scored once, in train.evaluate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve, roc_auc_score
from sklearn.model_selection import ParameterGrid, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

# Size-related hyper-parameters: node count drives serving latency (trees cold in cache), so size is a goal.
PARAM_GRID: dict[str, list[Any]] = {
    "n_estimators": [15, 30, 60, 120],
    "max_depth": [4, 6, 8, 12],
    "min_samples_leaf": [10, 40, 100],
}


@dataclass(frozen=True, slots=True)
class Split:
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series


# A threshold is near-degenerate when it calls almost everyone a churner, or recognises few of those who stay:
# then F1 mostly reflects the base rate (calling everyone churned scores nearly as well).
NEAR_DEGENERATE_CHURN_SHARE = 0.95
NEAR_DEGENERATE_RETAINED_RECALL = 0.20


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float
    best_f1: float
    precision: float
    recall: float
    degenerate: bool  # the best-F1 threshold labels every validation user churned
    predicted_churn_share: float  # share of validation users called churners
    retained_recall: float  # share of validation users who stayed that the threshold calls retained
    everyone_churns_f1: float  # F1 of calling every validation user a churner

    @property
    def near_degenerate(self) -> bool:
        return (
            self.predicted_churn_share >= NEAR_DEGENERATE_CHURN_SHARE
            or self.retained_recall < NEAR_DEGENERATE_RETAINED_RECALL
        )


@dataclass(frozen=True, slots=True)
class FittedForest:
    model: RandomForestClassifier
    params: dict[str, Any]
    node_count: int
    threshold: ThresholdChoice
    cv_results: list[dict[str, Any]] = field(default_factory=list)


def split_data(X: pd.DataFrame, y: pd.Series, test_size: float, random_state: int) -> Split:
    """Stratified train/test split."""
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=random_state
    )
    return Split(X_train, X_test, y_train, y_test)


def count_nodes(forest: RandomForestClassifier) -> int:
    """Total nodes over all trees: what the ONNX file and the serving cache have to hold."""
    return int(sum(tree.tree_.node_count for tree in forest.estimators_))


def _forest(params: dict[str, Any], random_state: int) -> RandomForestClassifier:
    return RandomForestClassifier(**params, random_state=random_state, n_jobs=-1)


def _cross_validate(
    params: dict[str, Any], X: pd.DataFrame, y: pd.Series, cv: StratifiedKFold, random_state: int
) -> tuple[npt.NDArray[np.float64], list[float], list[int]]:
    """Out-of-fold P(churn), per-fold ROC-AUC and per-fold node counts.

    Forests fit on all cores but score on one: threads would sum the trees in a varying order and make the
    out-of-fold scores, and so the threshold, differ in the last bit from run to run.
    """
    oof = np.empty(len(y), dtype=np.float64)
    aucs, nodes = [], []
    for train_idx, val_idx in cv.split(X, y):
        forest = _forest(params, random_state).fit(X.iloc[train_idx], y.iloc[train_idx])
        forest.set_params(n_jobs=None)
        oof[val_idx] = forest.predict_proba(X.iloc[val_idx])[:, 1]
        aucs.append(float(roc_auc_score(y.iloc[val_idx], oof[val_idx])))
        nodes.append(count_nodes(forest))
    return oof, aucs, nodes


def select_forest_params(
    X: pd.DataFrame,
    y: pd.Series,
    cv_folds: int,
    auc_tolerance: float,
    random_state: int,
    grid: dict[str, list[Any]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], npt.NDArray[np.float64]]:
    """Cross-validate ``grid`` (default :data:`PARAM_GRID`); the smallest forest within ``auc_tolerance`` of the best
    ROC-AUC.

    Returns the chosen parameters, one result row per grid point, and the chosen forest's out-of-fold scores.
    """
    cv = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=random_state)
    results: list[dict[str, Any]] = []
    oof_by_point: list[npt.NDArray[np.float64]] = []
    grid = grid if grid is not None else PARAM_GRID
    points = list(ParameterGrid(grid))
    for i, params in enumerate(points, start=1):
        oof, aucs, nodes = _cross_validate(params, X, y, cv, random_state)
        results.append({**params, "cv_roc_auc": float(np.mean(aucs)), "mean_nodes": float(np.mean(nodes))})
        oof_by_point.append(oof)
        logger.debug(  # one line per grid point at DEBUG; the chosen point's line below is the stage's summary
            "cv %d/%d %s roc_auc=%.4f nodes=%.0f",
            i,
            len(points),
            params,
            results[-1]["cv_roc_auc"],
            results[-1]["mean_nodes"],
        )
    best_auc = max(r["cv_roc_auc"] for r in results)
    eligible = [i for i, r in enumerate(results) if r["cv_roc_auc"] >= best_auc - auc_tolerance]
    chosen = min(eligible, key=lambda i: (results[i]["mean_nodes"], -results[i]["cv_roc_auc"]))
    params = {k: results[chosen][k] for k in grid}
    logger.info(
        "cross-validated %d grid points x %d folds; chosen %s cv_roc_auc=%.4f (best %.4f)",
        len(points),
        cv_folds,
        params,
        results[chosen]["cv_roc_auc"],
        best_auc,
    )
    return params, results, oof_by_point[chosen]


def tune_threshold(y_true: npt.ArrayLike, y_proba: npt.ArrayLike) -> ThresholdChoice:
    """The F1-maximizing threshold on the precision-recall curve, moved between two distinct scores.

    The rule is ``churn = p >= threshold``. The best threshold on the curve equals one of the scores; placing the
    final one halfway to the next lower distinct score keeps every decision on these scores and leaves no score
    sitting on the threshold, where float32 (onnxruntime) and float64 (scikit-learn) sums could disagree.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_proba = np.asarray(y_proba, dtype=np.float64)
    precision, recall, thresholds = precision_recall_curve(y_true, y_proba)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(np.argmax(f1[:-1]))  # the curve's last point has no threshold
    best_score = float(thresholds[best])
    lower = np.unique(y_proba[y_proba < best_score])
    degenerate = lower.size == 0
    threshold = best_score / 2 if degenerate else (best_score + float(lower[-1])) / 2
    called = y_proba >= threshold
    rate = float(y_true.mean())
    return ThresholdChoice(
        threshold=threshold,
        best_f1=float(f1[best]),
        precision=float(precision[best]),
        recall=float(recall[best]),
        degenerate=degenerate,
        predicted_churn_share=float(called.mean()),
        retained_recall=float((~called[~y_true]).mean()) if (~y_true).any() else 1.0,
        everyone_churns_f1=2 * rate / (1 + rate),
    )


def fit_forest(
    X: pd.DataFrame,
    y: pd.Series,
    cv_folds: int,
    auc_tolerance: float,
    random_state: int,
    grid: dict[str, list[Any]] | None = None,
) -> FittedForest:
    """Choose the size over ``grid``, tune the threshold on out-of-fold predictions, then refit on all of ``X``."""
    params, cv_results, oof_proba = select_forest_params(X, y, cv_folds, auc_tolerance, random_state, grid)
    choice = tune_threshold(y, oof_proba)
    if choice.near_degenerate:
        logger.warning(
            "near-degenerate threshold: it calls %.1f%% of validation users churners and recognises %.1f%% of those "
            "who stay; F1 %.3f vs %.3f for calling everyone churned",
            100 * choice.predicted_churn_share,
            100 * choice.retained_recall,
            choice.best_f1,
            choice.everyone_churns_f1,
        )
    logger.info("threshold=%.6f validation f1=%.4f", choice.threshold, choice.best_f1)
    model = _forest(params, random_state).fit(X, y)
    model.set_params(n_jobs=None)  # threads sum the trees in a varying order; one thread scores reproducibly
    return FittedForest(
        model=model, params=params, node_count=count_nodes(model), threshold=choice, cv_results=cv_results
    )


def fit_baseline(X: pd.DataFrame, y: pd.Series, random_state: int) -> Pipeline:
    """A scaled logistic regression on the same training rows, for context."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=random_state)).fit(X, y)
