"""A turn's requests as OpenTelemetry spans (:mod:`server.monitoring.tracing`): one SERVER span per sampled request,
named and described by the semantic conventions of its protocol (HTTP, or gRPC for ``ModelInfer``), with its stages
as events; the requests scored in the same onnxruntime call link to the first one's span."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from server.core.errors import Overloaded
from server.core.v2 import INFER_ROUTE
from server.core.v2_grpc import INFER_ROUTE as GRPC_INFER_ROUTE, SERVICE, grpc_status
from server.monitoring.otlp import SERVER, Shape, Span, shape
from server.monitoring.tracing import Trace, Tracer
from server.pipeline.answer import Answer

if TYPE_CHECKING:
    from server.core.served import ServedModel
    from server.monitoring.metrics import Metrics


class Request(Protocol):
    """What a span tells of a request (:class:`server.pipeline.pipeline.Request` is one)."""

    @property
    def route(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def version(self) -> str | None: ...


SpanFacts = tuple[int, str | None, float]  # a scored request's rows, V2 request id, and when its body was parsed


def trace_turn(
    tracer: Tracer,
    metrics: Metrics,
    model_name: str,
    served: ServedModel | None,
    requests: Sequence[Request],
    answers: Sequence[Answer],
    traces: Sequence[Trace | None],
    scoring: tuple[float, float] | None,
    scored: dict[int, SpanFacts],
    done: float,
) -> None:
    """Record the sampled requests of a turn (``traces``: each one's, decided before it was answered), and their
    latencies as the latency histogram's exemplars. ``scored``: the sampled requests that reached the turn's
    onnxruntime call, by place; ``scoring``: that call's perf_counter interval."""
    call: tuple[tuple[bytes, bytes], ...] = ()
    version = None if served is None else served.info.version
    for index, (request, answer, trace) in enumerate(zip(requests, answers, traces, strict=True)):
        if trace is None:
            continue
        metrics.observe_exemplar(request.route, trace.trace_id.hex(), done - request.started)
        overloaded = isinstance(answer.error, Overloaded)
        kind = _shape(request.route, request.version, answer.status, overloaded, model_name, version)
        facts = scored.get(index)
        own: tuple[tuple[str, Any], ...] = ()
        events: tuple[tuple[str, float], ...] = ()
        links: tuple[tuple[bytes, bytes], ...] = ()
        if facts is not None:
            rows, request_id, parsed = facts
            own = (("pulse.rows", rows), ("pulse.request_id", request_id)) if request_id else (("pulse.rows", rows),)
            assert scoring is not None
            events = (("parsed", parsed), ("score", scoring[0]), ("scored", scoring[1]))
            links = call
            if not call:  # the turn's call is in this trace: the others link to it
                call = ((trace.trace_id, trace.span_id),)
        span = Span(trace.trace_id, trace.span_id, trace.parent_id, trace.tracestate, kind, request.started, done, own,
                    events, links, answer.status >= 500)  # fmt: skip
        tracer.put(span)


@lru_cache(maxsize=256)  # a worker's spans come in a few shapes: route x status x model version
def _shape(
    route: str, version: str | None, status: int, overloaded: bool, model_name: str, model_version: str | None
) -> Shape:
    """The span's name and its protocol's attributes, written once per shape."""
    model = {"pulse.model.name": model_name}
    if model_version is not None:
        model["pulse.model.version"] = model_version
    if route == GRPC_INFER_ROUTE:
        code = grpc_status(status, overloaded)
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": "ModelInfer",
            "rpc.grpc.status_code": code,
        }
        return shape(f"{SERVICE}/ModelInfer", SERVER, {**attributes, **model})
    path = route
    if route == INFER_ROUTE:
        path = f"/v2/models/{model_name}{f'/versions/{version}' if version else ''}/infer"
    attributes = {
        "http.request.method": "POST",
        "http.route": route,
        "url.path": path,
        "http.response.status_code": status,
    }
    return shape(f"POST {route}", SERVER, {**attributes, **model})
