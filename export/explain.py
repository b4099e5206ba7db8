"""What the served forest's reason codes need beyond the ONNX graph: each node's training cover, and
``shap.TreeExplainer``'s own contributions on the golden rows, which the server must reproduce at start-up."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import RandomForestClassifier


def tree_covers(forest: RandomForestClassifier) -> list[list[float]]:
    """Per tree, per node (in scikit-learn's node order, which the ONNX node ids keep): the weighted training
    cover, the node weights ``shap.TreeExplainer`` uses for ``tree_path_dependent``."""
    return [tree.tree_.weighted_n_node_samples.astype(float).tolist() for tree in forest.estimators_]


def golden_contributions(forest: RandomForestClassifier, X: npt.NDArray[np.float32]) -> dict[str, Any]:
    """``shap.TreeExplainer`` (path-dependent) contributions to P(churn) for the rows ``X``, with its base value."""
    try:
        import shap
    except ImportError as exc:  # pragma: no cover - shap is in the train extra
        raise RuntimeError("export needs shap for the golden contributions: pip install '.[train]'") from exc
    explainer = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    frame = pd.DataFrame(X.astype(np.float64), columns=forest.feature_names_in_)
    values = np.asarray(explainer.shap_values(frame))
    churn = values[:, :, 1] if values.ndim == 3 else values[1]
    return {"base_value": float(np.ravel(explainer.expected_value)[1]), "contributions": churn.tolist()}
