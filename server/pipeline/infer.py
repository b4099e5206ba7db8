"""V2 ``infer`` requests answered, in either of the protocol's encodings: the HTTP JSON document (or the binary
tensor extension's JSON and bytes), and the gRPC ``ModelInferRequest``. Each is parsed and validated into the same
:class:`~server.core.v2.InferRequest` (:func:`parse_infer`), the requests of a turn are scored together
(:func:`score_infers`: at most one onnxruntime call for those that ask no reasons and one for those that do; drift
and the request log fed there), and each is rendered in its own encoding (:func:`render_infer`; both steps:
:func:`answer_infers`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from server.core.errors import ApiError, V2Error
from server.core.served import ORJSON_NUMPY, ServedModel
from server.core.v2 import (
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
from server.pipeline.scoring import log_rows, score


@dataclass(slots=True)
class ParsedInfer:
    """One valid V2 infer request waiting for its turn's onnxruntime call."""

    index: int  # its place among the requests being answered
    route: str  # INFER_ROUTE (HTTP) or GRPC_INFER_ROUTE: the encoding it is answered in
    request: InferRequest
    started: float
    parsed_at: float
    trace_id: str | None = None  # its trace, when it is traced (every request-log line of it carries it)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x, once per request
class Scored:
    probabilities: npt.NDArray[np.float32]  # [N, classes]: the model's output as it is
    contributions: npt.NDArray[np.float64] | None  # [N, features] when the request asked for reasons
    base_value: float
    seconds: float  # the onnxruntime call it was scored in (shared with the others of its group)


def parse_infer(
    served: ServedModel, route: str, model_name: str, max_batch: int, body: bytes, header_length: bytes | None
) -> InferRequest:
    """One infer request's body, in its route's encoding, parsed and checked; raises :class:`V2Error`."""
    if route == GRPC_INFER_ROUTE:
        message = decode_infer(body)
        served_or_error(served, model_name, message.model_name, message.model_version)
        request = parse_grpc_infer(message, served.info, max_batch)
    else:
        binary = None
        if header_length is not None:
            body, binary = split_binary_body(body, header_length.decode("latin-1"))
        try:
            data = decode_json(body)
        except ApiError as exc:
            raise V2Error.of(exc) from None
        request = parse_infer_request(data, served.info, max_batch, binary)
    if request.explain and served.model.explainer is None:
        raise V2Error(f"request parameter 'explain': {served.model.explain_unavailable}", 422)
    return request


def score_infers(served: ServedModel, metrics: Metrics, parsed: list[ParsedInfer]) -> list[Scored]:
    """Each request's results, in order: the rows of those that ask no reasons in one onnxruntime call, the rows of
    those that do in another (:func:`parse_infer` has checked that the model gives reasons)."""
    model = served.model
    base = model.explainer.base_value if model.explainer else 0.0
    results: list[Scored | None] = [None] * len(parsed)
    for explain in (False, True):
        group = [place for place, item in enumerate(parsed) if item.request.explain is explain]
        if not group:
            continue
        parts = [parsed[place].request.X for place in group]
        X = parts[0] if len(parts) == 1 else np.concatenate(parts)
        call = score(served, metrics, X, explain)
        start = 0
        for place in group:
            request = parsed[place].request
            end = start + len(request.X)
            mine = None if call.contributions is None else call.contributions[start:end]
            results[place] = Scored(call.probabilities[start:end], mine, base, call.seconds)
            item = parsed[place]
            traces = None if item.trace_id is None else [item.trace_id] * (end - start)
            log_rows(served, request.X, call.churn[start:end], mine, request.ids, request.id, traces)
            start = end
    return results  # type: ignore[return-value]  # every place is filled: each request is in one group


def answer_infers(served: ServedModel, metrics: Metrics, model_name: str, parsed: list[ParsedInfer]) -> list[Answer]:
    """The answers to ``parsed``, in order: scored together (:func:`score_infers`), each rendered in its encoding."""
    answers = []
    for item, result in zip(parsed, score_infers(served, metrics, parsed), strict=True):
        started = time.perf_counter()
        answers.append(render_infer(served, model_name, item, result))
        read_parse = item.parsed_at - item.started
        metrics.observe_stages(item.route, read_parse, result.seconds, time.perf_counter() - started)
    return answers


def render_infer(served: ServedModel, model_name: str, parsed: ParsedInfer, result: Scored) -> Answer:
    """The answer to one scored infer request, in its route's encoding."""
    request, info = parsed.request, served.info
    if parsed.route == GRPC_INFER_ROUTE:
        response = grpc_infer_response(
            model_name, info, result.probabilities, request.id, result.contributions, result.base_value, request.ids
        )
        return Answer(200, response, GRPC)
    document, chunks = infer_response(
        model_name,
        info,
        result.probabilities,
        request.id,
        result.contributions,
        result.base_value,
        request.binary_outputs,
        request.ids,
    )
    header = orjson.dumps(document, option=ORJSON_NUMPY)
    if not chunks:
        return Answer(200, header)
    return Answer(200, b"".join([header, *chunks]), BINARY, ((HEADER_LENGTH, b"%d" % len(header)),))
