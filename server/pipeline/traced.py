"""A turn's requests as OpenTelemetry spans (:mod:`server.monitoring.tracing`): one SERVER span per sampled request,
named and described by the semantic conventions of its protocol (HTTP, or gRPC for ``ModelInfer``), with its stages
as events; the requests scored in the same onnxruntime call link to the first one's span."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from server.core.errors import Overloaded
from server.core.v2 import INFER_ROUTE
from server.core.v2_grpc import INFER_ROUTE as GRPC_INFER_ROUTE, SERVICE, grpc_status
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
    call = None
    for index, (request, answer, trace) in enumerate(zip(requests, answers, traces, strict=True)):
        if trace is None:
            continue
        metrics.observe_exemplar(request.route, trace.trace_id.hex(), done - request.started)
        name, attributes = _described(request, answer, model_name)
        if served is not None:
            attributes["pulse.model.version"] = served.info.version
        rows, request_id, parsed = scored.get(index, (0, None, None))
        if index in scored:
            attributes["pulse.rows"] = rows
        if request_id:
            attributes["pulse.request_id"] = request_id
        window = scoring if index in scored else None
        shared = call if window is not None else None
        tracer.request(trace, name, request.started, parsed, window, done, attributes, shared, answer.status >= 500)
        if call is None and window is not None:  # the turn's call is in this trace: the others link to it
            call = (trace.trace_id, trace.span_id)


def _described(request: Request, answer: Answer, model_name: str) -> tuple[str, dict[str, Any]]:
    """The span's name and its protocol's attributes."""
    if request.route == GRPC_INFER_ROUTE:
        code = grpc_status(answer.status, isinstance(answer.error, Overloaded))
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": "ModelInfer",
            "rpc.grpc.status_code": code,
        }
        return f"{SERVICE}/ModelInfer", {**attributes, "pulse.model.name": model_name}
    path = request.route
    if request.route == INFER_ROUTE:
        version = f"/versions/{request.version}" if request.version else ""
        path = f"/v2/models/{model_name}{version}/infer"
    attributes = {
        "http.request.method": "POST",
        "http.route": request.route,
        "url.path": path,
        "http.response.status_code": answer.status,
        "pulse.model.name": model_name,
    }
    return f"POST {request.route}", attributes
