"""The training distribution a model carries for live drift: per-feature reference bins (edges and training shares,
and the same for the predicted probability), as export writes them into the ``reference_bins`` metadata."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREDICTION = "churn_probability"


class DriftReferenceError(ValueError):
    """The model's ``reference_bins`` metadata cannot be used; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    edges: tuple[float, ...]
    shares: tuple[float, ...]


def read_reference(metadata: Mapping[str, Any], features: Sequence[str]) -> list[Column]:
    """Columns in counting order: the model's features, then the predicted probability."""
    try:
        specs = [(name, metadata["features"][name]) for name in features] + [(PREDICTION, metadata["prediction"])]
        columns = [Column(name, tuple(map(float, s["edges"])), tuple(map(float, s["shares"]))) for name, s in specs]
    except (KeyError, TypeError, ValueError) as exc:
        raise DriftReferenceError(f"'reference_bins' lacks a usable entry: {exc!s:.80}") from None
    for column in columns:
        if len(column.shares) != len(column.edges) + 1 or list(column.edges) != sorted(column.edges):
            raise DriftReferenceError(f"'reference_bins' for {column.name!r}: need sorted edges and one share more")
        if not math.isclose(sum(column.shares), 1.0, abs_tol=1e-6):
            raise DriftReferenceError(f"'reference_bins' shares for {column.name!r} do not sum to 1")
    return columns
