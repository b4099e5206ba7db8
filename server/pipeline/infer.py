"""V2 ``infer`` bodies answered: the JSON document (or the binary tensor extension's JSON and bytes) parsed and
validated, scored, explained when asked, rendered; drift, request log and stage timings fed once."""

from __future__ import annotations

import time

import numpy as np
import orjson

from server.core.errors import ApiError, V2Error
from server.core.served import ORJSON_NUMPY, ServedModel
from server.core.v2 import INFER_ROUTE, infer_response, parse_infer_request, split_binary_body
from server.core.validation import decode_json
from server.monitoring.metrics import Metrics
from server.pipeline.answer import BINARY, Answer
from server.pipeline.head import HEADER_LENGTH


def answer_infer(
    served: ServedModel,
    metrics: Metrics,
    model_name: str,
    max_batch: int,
    body: bytes,
    header_length: bytes | None,
    started: float,
) -> Answer:
    """The answer to one infer request's body. Raises :class:`V2Error` for a bad request."""
    binary = None
    if header_length is not None:
        body, binary = split_binary_body(body, header_length.decode("latin-1"))
    try:
        data = decode_json(body)
    except ApiError as exc:
        raise V2Error.of(exc) from None
    request = parse_infer_request(data, served.info, max_batch, binary)
    X, model = request.X, served.model
    if request.explain and model.explainer is None:
        raise V2Error(f"request parameter 'explain': {model.explain_unavailable}", 422)
    parsed = time.perf_counter()
    probabilities = model.predict_proba(X)
    contributions = model.explainer.shap_values(X) if request.explain and model.explainer else None
    scored = time.perf_counter()
    churn = np.ascontiguousarray(probabilities[:, served.info.positive_index])
    if served.drift is not None:
        served.drift.add_batch(X, churn)
    if served.request_log is not None:
        top = None
        if contributions is not None:
            top = [served.info.features[j] for j in np.argmax(np.abs(contributions), axis=1).tolist()]
        served.request_log.submit(X, churn, top)
    base = model.explainer.base_value if model.explainer else 0.0
    response, chunks = infer_response(
        model_name, served.info, probabilities, request.id, contributions, base, request.binary_outputs
    )
    header = orjson.dumps(response, option=ORJSON_NUMPY)
    metrics.observe_scoring(INFER_ROUTE, len(X), parsed - started, scored - parsed, time.perf_counter() - scored)
    if not chunks:
        return Answer(200, header)
    return Answer(200, b"".join([header, *chunks]), BINARY, ((HEADER_LENGTH, b"%d" % len(header)),))
