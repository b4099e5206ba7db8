"""V2 ``infer`` requests answered, in either of the protocol's encodings: the HTTP JSON document (or the binary
tensor extension's JSON and bytes), and the gRPC ``ModelInferRequest``. Each is parsed and validated into the same
:class:`~server.core.v2.InferRequest`, scored and explained once (:func:`_scored`: drift and the request log fed
there), and rendered in its own encoding."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from server.core.errors import ApiError, V2Error
from server.core.served import ORJSON_NUMPY, ServedModel
from server.core.v2 import (
    INFER_ROUTE,
    InferRequest,
    infer_response,
    parse_infer_request,
    served_or_error,
    split_binary_body,
)
from server.core.v2_grpc import INFER_ROUTE as GRPC_INFER_ROUTE, decode_infer, grpc_infer_response, parse_grpc_infer
from server.core.validation import decode_json
from server.monitoring.metrics import Metrics
from server.pipeline.answer import BINARY, GRPC, Answer
from server.pipeline.head import HEADER_LENGTH


@dataclass(frozen=True, slots=True)
class Scored:
    probabilities: npt.NDArray[np.float32]  # [N, classes]: the model's output as it is
    contributions: npt.NDArray[np.float64] | None  # [N, features] when the request asked for reasons
    base_value: float


def answer_infer(
    served: ServedModel,
    metrics: Metrics,
    model_name: str,
    max_batch: int,
    body: bytes,
    header_length: bytes | None,
    started: float,
) -> Answer:
    """The answer to one HTTP infer request's body. Raises :class:`V2Error` for a bad request."""
    binary = None
    if header_length is not None:
        body, binary = split_binary_body(body, header_length.decode("latin-1"))
    try:
        data = decode_json(body)
    except ApiError as exc:
        raise V2Error.of(exc) from None
    request = parse_infer_request(data, served.info, max_batch, binary)
    parsed = time.perf_counter()
    result = _scored(served, request)
    scored = time.perf_counter()
    response, chunks = infer_response(
        model_name,
        served.info,
        result.probabilities,
        request.id,
        result.contributions,
        result.base_value,
        request.binary_outputs,
        request.ids,
    )
    header = orjson.dumps(response, option=ORJSON_NUMPY)
    metrics.observe_scoring(
        INFER_ROUTE, len(request.X), parsed - started, scored - parsed, time.perf_counter() - scored
    )
    if not chunks:
        return Answer(200, header)
    return Answer(200, b"".join([header, *chunks]), BINARY, ((HEADER_LENGTH, b"%d" % len(header)),))


def answer_grpc_infer(
    served: ServedModel, metrics: Metrics, model_name: str, max_batch: int, body: bytes, started: float
) -> Answer:
    """The answer to one gRPC ``ModelInfer`` (its serialized request): the serialized ``ModelInferResponse``."""
    message = decode_infer(body)
    served_or_error(served, model_name, message.model_name, message.model_version)
    request = parse_grpc_infer(message, served.info, max_batch)
    parsed = time.perf_counter()
    result = _scored(served, request)
    scored = time.perf_counter()
    response = grpc_infer_response(
        model_name, served.info, result.probabilities, request.id, result.contributions, result.base_value, request.ids
    )
    metrics.observe_scoring(
        GRPC_INFER_ROUTE, len(request.X), parsed - started, scored - parsed, time.perf_counter() - scored
    )
    return Answer(200, response, GRPC)


def _scored(served: ServedModel, request: InferRequest) -> Scored:
    """The request's probabilities (and contributions when asked), with drift and the request log fed."""
    X, model = request.X, served.model
    if request.explain and model.explainer is None:
        raise V2Error(f"request parameter 'explain': {model.explain_unavailable}", 422)
    contributions = None
    if request.explain:  # one onnxruntime call for both (model.onnx computes the contributions)
        probabilities, contributions = model.explain(X)
    else:
        probabilities = model.predict_proba(X)
    churn = np.ascontiguousarray(probabilities[:, served.info.positive_index])
    if served.drift is not None:
        served.drift.add_batch(X, churn)
    if served.request_log is not None and served.request_log.active:
        top = None
        if contributions is not None:
            top = [served.info.features[j] for j in np.argmax(np.abs(contributions), axis=1).tolist()]
        served.request_log.submit(X, churn, top, request.ids, request.id)
    base = model.explainer.base_value if model.explainer else 0.0
    return Scored(probabilities, contributions, base)
