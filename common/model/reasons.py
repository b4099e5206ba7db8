"""Which features a row's answer names as its reasons: the one rule the server's answers, its request log and the
nightly scorer share."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def strongest(contributions: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.intp]:
    """Per row, the indices of the ``k`` features with the largest |contribution|, largest first; a tie goes to the
    feature that comes first in the model's order."""
    order: npt.NDArray[np.intp]
    if k == 1:  # the request log's top reason: argmax keeps the first of equal maxima, as the stable sort does
        order = np.argmax(np.abs(contributions), axis=1)[:, None]
    else:
        order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    return order
