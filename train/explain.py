"""SHAP summaries of the served forest."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from train.evaluate import png_bytes


def shap_summary(
    model: RandomForestClassifier, X: pd.DataFrame, max_rows: int, random_state: int
) -> tuple[bytes, dict[str, float]]:
    """A SHAP beeswarm of P(churn) on a sample of ``X`` (PNG) and the mean |SHAP| per feature."""
    try:
        import shap
    except ImportError as exc:  # pragma: no cover - shap is in the train extra
        raise RuntimeError("train.explain needs shap: pip install '.[train]'") from exc
    import matplotlib.pyplot as plt

    sample = X.sample(n=min(max_rows, len(X)), random_state=random_state)
    values = shap.TreeExplainer(model).shap_values(sample)
    churn_values = values[:, :, 1] if np.ndim(values) == 3 else values[1]
    shap.summary_plot(churn_values, sample, show=False, plot_size=(7, 3.6))
    fig = plt.gcf()
    fig.suptitle("SHAP values for P(churn), test sample")
    mean_abs = {name: float(v) for name, v in zip(X.columns, np.abs(churn_values).mean(axis=0), strict=True)}
    return png_bytes(fig), mean_abs
