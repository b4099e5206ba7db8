"""One onnxruntime call over a turn's rows, and what follows every call whichever route asked for it: the call's
timing, drift, and the request log's lines (each row's top reason by :func:`~common.model.reasons.strongest`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.model.reasons import strongest
from server.core.ids import Id
from server.core.served import ServedModel
from server.monitoring.metrics import Metrics


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x, once per request
class Call:
    probabilities: npt.NDArray[np.float32]  # [N, classes]: the model's output as it is
    churn: npt.NDArray[np.float32]  # [N]: P(churn), contiguous
    contributions: npt.NDArray[np.float64] | None  # [N, features] when reasons were asked
    seconds: float


def score(served: ServedModel, metrics: Metrics, X: npt.NDArray[np.float32], explain: bool) -> Call:
    """The rows of ``X`` scored in one call (with their contributions when ``explain``: model.onnx computes both in
    the same call), timed, and fed to drift."""
    started = time.perf_counter()
    contributions = None
    if explain:
        probabilities, contributions = served.model.explain(X)
    else:
        probabilities = served.model.predict_proba(X)
    seconds = time.perf_counter() - started
    metrics.observe_call(seconds, len(X))
    churn = np.ascontiguousarray(probabilities[:, served.info.positive_index])
    if served.drift is not None:
        served.drift.add_batch(X, churn)
    return Call(probabilities, churn, contributions, seconds)


def log_rows(
    served: ServedModel,
    X: npt.NDArray[np.float32],
    churn: npt.NDArray[np.float32],
    contributions: npt.NDArray[np.float64] | None,
    ids: Sequence[Id | None] | None,
    request_id: str | None = None,
    trace_ids: Sequence[str | None] | None = None,
) -> None:
    """Rows of one request (or of a turn's plain requests) into the request log, each with its top reason when it
    was explained."""
    request_log = served.request_log
    if request_log is None or not request_log.active:
        return
    top = None
    if contributions is not None:
        features = served.info.features
        top = [features[j] for j in strongest(contributions, 1)[:, 0].tolist()]
    request_log.submit(X, churn, top, ids, request_id, trace_ids)
