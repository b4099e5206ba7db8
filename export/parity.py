"""scikit-learn vs onnxruntime vs the ONNX reference evaluator, on the same float32 rows.

The claim: max |p_sklearn - p_onnx| <= 1e-6 and not one decision differs at the tuned threshold, on the test set
plus generated rows that sit on, and just either side of, every split threshold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pandas as pd
from onnx import ModelProto
from onnx.reference import ReferenceEvaluator
from sklearn.ensemble import RandomForestClassifier

from common.model.treeshap import CONTRIBUTIONS_OUTPUT, EXPLAIN_INPUT
from export.convert import INPUT_NAME, PROBABILITY_OUTPUT, floor_float32

logger = logging.getLogger(__name__)

TOLERANCE = 1e-6
N_GENERATED = 10_000


class ParityError(ValueError):
    """The converted model does not reproduce scikit-learn; ``report`` holds the figures."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def edge_rows(
    forest: RandomForestClassifier, X_reference: npt.NDArray[np.float32], n_rows: int, seed: int
) -> npt.NDArray[np.float32]:
    """Rows built from reference rows with features replaced by edge values.

    Edge values per feature: 0, very large counts, every split threshold (as float32) and the float32
    neighbours on either side of it.
    """
    rng = np.random.default_rng(seed)
    n_features = X_reference.shape[1]
    specials: list[npt.NDArray[np.float32]] = []
    for j in range(n_features):
        split = np.concatenate([t.tree_.threshold[t.tree_.feature == j] for t in forest.estimators_])
        on = floor_float32(np.unique(split))
        specials.append(
            np.unique(
                np.concatenate(
                    [
                        on,
                        np.nextafter(on, np.float32(np.inf)),
                        np.nextafter(on, np.float32(-np.inf)),
                        np.array([0.0, 1.0, 1e6, 1e9, 3.0e38], dtype=np.float32),
                    ]
                )
            ).astype(np.float32)
        )
    rows = X_reference[rng.integers(0, len(X_reference), size=n_rows)].copy()
    for j in range(n_features):
        replace = rng.random(n_rows) < 0.6
        rows[replace, j] = rng.choice(specials[j], size=int(replace.sum()))
    rows[: min(n_rows, 1)] = 0.0
    return rows


def sklearn_probabilities(forest: RandomForestClassifier, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """P(churn) from scikit-learn, given the same float32 rows (named, as the forest was fitted on a frame)."""
    names = getattr(forest, "feature_names_in_", None)
    rows = pd.DataFrame(X, columns=names) if names is not None else X
    return np.asarray(forest.predict_proba(rows)[:, 1])


def onnx_probabilities(session: ort.InferenceSession, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(session.run([PROBABILITY_OUTPUT], {INPUT_NAME: X})[0])[:, 1]


CONTRIBUTION_KEYS = (
    "contributions_max_abs_diff_onnxruntime",
    "contributions_max_abs_diff_reference",
    "contributions_additivity",
)


def _contribution_parity(
    forest: RandomForestClassifier,
    session: ort.InferenceSession,
    reference: ReferenceEvaluator,
    X: npt.NDArray[np.float32],
    probabilities: npt.NDArray[np.float32],
) -> dict[str, float]:
    """The graph's contributions (both runtimes) against ``shap.TreeExplainer`` on the scikit-learn forest, and
    their additivity: base value + contributions = the model's probability."""
    import shap

    explainer = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    values = np.asarray(explainer.shap_values(pd.DataFrame(X.astype(np.float64), columns=forest.feature_names_in_)))
    expected = values[:, :, 1] if values.ndim == 3 else values[1]
    base = float(np.ravel(explainer.expected_value)[1])
    feed = {INPUT_NAME: X, EXPLAIN_INPUT: np.array(True)}
    got = session.run([CONTRIBUTIONS_OUTPUT], feed)[0]
    ref = np.asarray(reference.run([CONTRIBUTIONS_OUTPUT], feed)[0])  # type: ignore[index]
    return {
        "contributions_max_abs_diff_onnxruntime": float(np.max(np.abs(got - expected))),
        "contributions_max_abs_diff_reference": float(np.max(np.abs(ref - expected))),
        "contributions_additivity": float(np.max(np.abs(base + got.astype(np.float64).sum(axis=1) - probabilities))),
    }


def check_parity(
    forest: RandomForestClassifier,
    onnx_model: ModelProto,
    X_test: npt.NDArray[np.float32],
    threshold: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the three runtimes; return the report, raise :class:`ParityError` when the claim fails."""
    X_test = np.ascontiguousarray(X_test, dtype=np.float32)
    sets = {"test": X_test, "generated": edge_rows(forest, X_test, N_GENERATED, seed)}
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the note that the 'explain' input has a default (export.shap_graph)
    session = ort.InferenceSession(onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference = ReferenceEvaluator(onnx_model)
    report: dict[str, Any] = {"tolerance": TOLERANCE, "threshold": threshold, "onnxruntime": ort.__version__}
    failures = []
    explains = CONTRIBUTIONS_OUTPUT in {output.name for output in onnx_model.graph.output}
    report["contributions"] = explains
    for name, X in sets.items():
        expected = sklearn_probabilities(forest, X)
        got = onnx_probabilities(session, X)
        ref = np.asarray(reference.run([PROBABILITY_OUTPUT], {INPUT_NAME: X})[0])[:, 1]  # type: ignore[index]
        result = {
            "rows": len(X),
            "max_abs_diff_onnxruntime": float(np.max(np.abs(got - expected))),
            "max_abs_diff_reference": float(np.max(np.abs(ref - expected))),
            "max_abs_diff_onnxruntime_vs_reference": float(np.max(np.abs(ref - got))),
            "decision_flips": int(np.sum((got >= threshold) != (expected >= threshold))),
            "decision_flips_reference": int(np.sum((ref >= threshold) != (expected >= threshold))),
        }
        if explains:
            result.update(_contribution_parity(forest, session, reference, X, got))
        report[name] = result
        for key in (
            "max_abs_diff_onnxruntime",
            "max_abs_diff_reference",
            "max_abs_diff_onnxruntime_vs_reference",
            *(CONTRIBUTION_KEYS if explains else ()),
        ):
            if not result[key] <= TOLERANCE:
                failures.append(f"{name} {key}={result[key]:.3g} > {TOLERANCE}")
        for key in ("decision_flips", "decision_flips_reference"):
            if result[key]:
                failures.append(f"{name} {key}={result[key]}")
        logger.info("parity %s %s", name, result)
    report["passed"] = not failures
    if failures:
        raise ParityError("parity failed: " + "; ".join(failures), report)
    return report
