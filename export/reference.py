"""Reference distributions for live drift: per feature (and for the predicted probability), quantile bin edges
from the training rows and the training share in each bin. The server counts production rows into the same bins
and reports the Population Stability Index against these shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

N_BINS = 10


def reference_bins(values: npt.ArrayLike, n_bins: int = N_BINS) -> dict[str, Any]:
    """Inner edges at the training quantiles (open ends; repeated quantiles merged) and each bin's share.

    A value ``v`` falls in bin ``searchsorted(edges, v, side="right")``: bin ``i`` is ``[edges[i-1], edges[i])``,
    the first bin everything below ``edges[0]``, the last everything from ``edges[-1]`` up.
    """
    v = np.asarray(values, dtype=np.float64)
    quantiles = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1], method="inverted_cdf")  # values that occur
    edges = np.unique(quantiles)
    edges = edges[edges > v.min()]  # an edge at the minimum would leave the first bin empty by construction
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}


def reference_distributions(
    X: npt.NDArray[np.float32], features: list[str], probabilities: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """The ``reference_bins`` metadata: every feature's bins and the predicted probability's."""
    return {
        "features": {name: reference_bins(X[:, j].astype(np.float64)) for j, name in enumerate(features)},
        "prediction": reference_bins(probabilities),
        "rows": int(len(X)),
    }
