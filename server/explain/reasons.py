"""``POST /predict?explain=K``: each result also carries the base value and its K strongest SHAP reasons.

Kept apart from the hot path: a request without a query string never reaches this module.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import numpy.typing as npt
import orjson

from common.model.loader import Model
from common.model.reasons import strongest
from server.core.errors import ValidationFailed, field_error
from server.core.ids import Id
from server.core.served import ORJSON_NUMPY

PARAMETER = "explain"


def explain_count(query_string: bytes, model: Model) -> int | None:
    """K from ``explain=K`` (1 .. number of features), ``None`` without it; a 422 naming the parameter otherwise."""
    values = [v for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if k == PARAMETER]
    if not values:
        return None
    n_features = len(model.info.features)
    if model.explainer is None:
        raise ValidationFailed([field_error(["query", PARAMETER], model.explain_unavailable, "explain_unavailable")])
    raw = values[-1]
    # ASCII digits only ("²".isdigit() is true and int("²") fails), and few (int() refuses 4,300+ digits).
    if len(values) > 1 or not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= n_features:
        raise ValidationFailed(
            [
                field_error(
                    ["query", PARAMETER],
                    f"Input should be one whole number from 1 to {n_features} (the model's features), got {raw!r}",
                    "int_range",
                )
            ]
        )
    return int(raw)


def top_reasons(
    X: npt.NDArray[np.float32], contributions: npt.NDArray[np.float64], features: tuple[str, ...], k: int
) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` features with the largest |contribution|, largest first."""
    order = strongest(contributions, k)
    shares = contributions.tolist()
    # Values stay float32 scalars: orjson writes them as the request's numbers (7.666, not 7.665999889373779).
    return [
        [{"feature": features[j], "value": X[i, j], "contribution": shares[i][j]} for j in row]
        for i, row in enumerate(order.tolist())
    ]


def render_explained(
    model: Model,
    X: npt.NDArray[np.float32],
    proba: npt.NDArray[np.float32],
    contributions: npt.NDArray[np.float64],
    k: int,
    one: bool,
    ids: list[Id | None] | None = None,
) -> bytes:
    """The JSON results with reasons (each row's caller id first, when sent)."""
    assert model.explainer is not None
    info = model.info
    reasons = top_reasons(X, contributions, info.features, k)
    results = [
        {
            "churn_probability": p,
            "churn": p >= info.threshold,
            "threshold": info.threshold,
            "model_version": info.version,
            "base_value": model.explainer.base_value,
            "reasons": row,
        }
        for p, row in zip(proba, reasons, strict=True)  # float32 scalars, rendered as the plain results are
    ]
    if ids is not None:
        results = [result if i is None else {"id": i, **result} for result, i in zip(results, ids, strict=True)]
    return orjson.dumps(results[0] if one else results, option=ORJSON_NUMPY)
