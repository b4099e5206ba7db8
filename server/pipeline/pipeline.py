"""The one request pipeline: ``/predict`` and V2 ``infer`` requests, from head and body to a whole answer.

Doors (``server.http``: the connection's own path and the ASGI app) only frame bytes. A door scans the head
(:class:`~server.pipeline.head.RequestHead`), asks :meth:`Pipeline.authorize` and :meth:`Pipeline.check_head`,
reads the body within the limit, and hands one or more complete requests to :meth:`Pipeline.answer`, which
parses, scores (the ``/predict`` rows of all of them in one onnxruntime call), explains, renders, logs, counts and
feeds drift. Errors become answers in one place (:func:`~server.pipeline.answer.error_answer`). No Starlette,
no uvicorn: the same answers whatever serves the bytes (the pattern of MLServer's ``DataPlane``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from server.core.access import granted
from server.core.errors import (
    ApiError,
    Forbidden,
    InternalError,
    NotReady,
    Unauthorized,
    UnsupportedMediaType,
    shown,
)
from server.core.served import ServedModel
from server.core.v2 import INFER_ROUTE, served_or_error
from server.core.v2_grpc import INFER_ROUTE as GRPC_INFER_ROUTE
from server.core.validation import Identified
from server.monitoring.tracing import Trace, parse_traceparent
from server.pipeline.answer import Answer, error_answer
from server.pipeline.head import RequestHead
from server.pipeline.infer import ParsedInfer, answer_infers, parse_infer
from server.pipeline.predict import ROUTE, ParsedRequest, explain_asked, score_explained, score_together
from server.pipeline.probes import probe_answer
from server.pipeline.state import ServerState
from server.pipeline.traced import SpanFacts, trace_turn

logger = logging.getLogger(__name__)

PREDICT_ROUTE = ROUTE
ROUTES = (PREDICT_ROUTE, INFER_ROUTE, GRPC_INFER_ROUTE)
Grouped = TypeVar("Grouped", ParsedRequest, ParsedInfer)  # a request parsed and waiting for its group's call
V2_ROUTES = frozenset({INFER_ROUTE, GRPC_INFER_ROUTE})  # their errors in the protocol's body


TraceContext = tuple[bytes, bytes | None]  # a request's traceparent and tracestate headers, as sent


@dataclass(slots=True)
class Request:
    """One complete request for the pipeline: its route (a metrics label), query, body and arrival time."""

    route: str
    query: bytes
    body: bytes
    started: float
    header_length: bytes | None = None  # V2 binary tensor extension: the JSON part's length
    version: str | None = None  # the model version a versioned V2 path named: 404 if another is served by now
    trace_context: TraceContext | None = None  # W3C Trace Context, when the request came with a traceparent


class Pipeline:
    """One worker's pipeline over its :class:`ServerState` (the model served now, limits, metrics, keys)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.model_name = state.settings.model_name
        self.infer_path = f"/v2/models/{self.model_name}/infer".encode()
        self.versions_path = f"/v2/models/{self.model_name}/versions/".encode()

    def route_of(self, method: bytes, path: bytes) -> str | None:
        """The pipeline route a request line names, ``None`` for anything else (the rest of the app's)."""
        if method != b"POST":
            return None
        if path == b"/predict":
            return PREDICT_ROUTE
        if path == self.infer_path:
            return INFER_ROUTE
        if path.startswith(self.versions_path) and path.endswith(b"/infer"):
            # The served version's infer; any other version is the route table's 404.
            served = self.state.served
            if served is not None and path[len(self.versions_path) : -6] == served.info.version.encode():
                return INFER_ROUTE
        return None

    def version_named(self, path: bytes) -> str | None:
        """The model version a V2 infer path names (``/v2/models/<name>/versions/<version>/infer``), if any."""
        if path.startswith(self.versions_path) and path.endswith(b"/infer"):
            return path[len(self.versions_path) : -6].decode("latin-1")
        return None

    def probe(self, path: bytes, started: float) -> Answer:
        """The answer to ``GET path`` for a probe (:data:`~server.core.access.PROBES`), counted under its path."""
        answer = probe_answer(self.state, path)
        self.state.metrics.observe_request(path.decode(), answer.status, time.perf_counter() - started)
        return answer

    def authorize(self, needed: str | None, path: str, head: RequestHead) -> ApiError | None:
        """With API keys on: ``None`` when the request's key grants ``needed``, else the 400/401/403 to answer,
        counted as a refusal. Every route asks this, whichever door it came in by."""
        refused = self.key_error(needed, path, head)
        if refused is None:
            return None
        error, reason = refused
        self.state.metrics.rejected[(reason, error.status_code)] += 1
        return error

    def key_error(self, needed: str | None, path: str, head: RequestHead) -> tuple[ApiError, str] | None:
        """What :meth:`authorize` refuses, and the refusal's reason label, without counting it."""
        keys = self.state.keys
        if needed is None or keys is None:
            return None
        if head.repeated == b"authorization":
            return ApiError("the authorization header was sent more than once"), "unauthorized"
        key_scope = keys.scope_of(head.authorization)
        if key_scope is not None and granted(key_scope, needed):
            return None
        if key_scope is None:
            return Unauthorized("missing or invalid API key: send Authorization: Bearer <key>"), "unauthorized"
        return Forbidden(f"this key's scope {key_scope!r} does not allow {shown(path)}"), "forbidden"

    def check_head(self, route: str, head: RequestHead) -> int | None:
        """What a request must be before its body is read: a model served, one of each single-valued header, a
        JSON body (or V2's binary extension), no Content-Encoding, a length within the limit. Returns the declared
        length; raises the ``ApiError`` to answer (:meth:`refuse` renders it)."""
        if self.state.served is None:
            raise NotReady("model not loaded yet")
        head.check_single()
        kind = head.content_type
        if route == PREDICT_ROUTE:
            if kind != b"application/json" and head.media_type() != b"application/json":
                raise UnsupportedMediaType("Content-Type must be application/json")
        elif not (
            kind is None  # the protocol names no media type, and Triton's client sends none: JSON, or JSON + binary
            or head.media_type() == b"application/json"
            or (head.header_length is not None and head.media_type() == b"application/octet-stream")
        ):
            raise UnsupportedMediaType(
                "Content-Type must be application/json (or application/octet-stream with the binary tensor extension)"
            )
        head.check_encoding()
        return head.declared_length()

    def refuse(self, route: str, error: ApiError, started: float) -> Answer:
        """The answer to a request refused before the pipeline could take its body; counted."""
        answer = error_answer(error, v2=route in V2_ROUTES)
        self.state.metrics.observe_request(route, answer.status, time.perf_counter() - started)
        return answer

    def answer(self, requests: list[Request]) -> list[Answer]:
        """The answers to complete requests, in order; each counted in the metrics. Valid ``/predict`` rows of all
        of them are scored in one onnxruntime call. Whatever goes wrong with one request, expected (a 4xx) or not
        (a 500, logged), is confined to it: its neighbours get the answers they would get alone."""
        answers: list[Answer | None] = [None] * len(requests)
        served = self.state.served
        tracer = self.state.tracer
        # Sampled or not is decided before anything is recorded: the request log's lines carry the trace ids too.
        traces = None
        if tracer is not None:
            traces = [tracer.decide(*(r.trace_context or (None, None))) for r in requests]
            if not any(traces):
                traces = None  # a turn with nothing sampled records nothing more: as with tracing off
        scored: dict[int, SpanFacts] = {}  # with tracing on: what each sampled request's span tells of its scoring
        scoring = None
        if served is None:
            refusal = NotReady("model not loaded yet")
            answers = [error_answer(refusal, v2=request.route in V2_ROUTES) for request in requests]
        else:
            scoring = self._answer(served, requests, answers, scored if traces is not None else None, traces)
        done = time.perf_counter()
        by_route: dict[str, tuple[list[int], list[float]]] = {}
        for request, answer in zip(requests, answers, strict=True):
            assert answer is not None
            statuses, seconds = by_route.setdefault(request.route, ([], []))
            statuses.append(answer.status)
            seconds.append(done - request.started)
        metrics = self.state.metrics
        for route, (statuses, seconds) in by_route.items():
            metrics.observe_answers(route, statuses, seconds)
        filled: list[Answer] = answers  # type: ignore[assignment]  # every slot is filled above
        if traces is not None:
            assert tracer is not None
            trace_turn(tracer, metrics, self.model_name, served, requests, filled, traces, scoring, scored, done)
        return filled

    def _answer(
        self,
        served: ServedModel,
        requests: list[Request],
        answers: list[Answer | None],
        scored: dict[int, SpanFacts] | None,
        traces: list[Trace | None] | None,
    ) -> tuple[float, float]:
        """Fill ``answers``; the perf_counter interval the turn's scoring took (and, into ``scored`` when given, the
        rows, V2 id and parse time of each sampled request that reached it)."""
        state = self.state
        together: list[ParsedRequest] = []  # /predict without reasons
        explains: list[ParsedRequest] = []  # /predict?explain=K
        infers: list[ParsedInfer] = []
        for index, request in enumerate(requests):
            try:
                if request.version is not None:  # checked at the head, again now: a swap may have landed since
                    served_or_error(served, self.model_name, self.model_name, request.version)
                if request.route in V2_ROUTES:
                    parsed = parse_infer(
                        served,
                        request.route,
                        self.model_name,
                        state.settings.max_batch,
                        request.body,
                        request.header_length,
                    )
                    trace_id = None if traces is None else _trace_id(traces, index)
                    infers.append(
                        ParsedInfer(index, request.route, parsed, request.started, time.perf_counter(), trace_id)
                    )
                    continue
                rows = served.parser.parse(request.body)
                ids = None
                if isinstance(rows, Identified):
                    ids = rows.ids
                    rows = rows.rows
                k = explain_asked(served, rows, request.query) if request.query else None
                parsed_request = ParsedRequest(
                    index,
                    rows,
                    request.started,
                    time.perf_counter(),
                    ids,
                    k,
                    None if traces is None else _trace_id(traces, index),
                )
                (together if k is None else explains).append(parsed_request)
            except ApiError as exc:
                answers[index] = error_answer(exc, v2=request.route in V2_ROUTES)
            except Exception:
                answers[index] = _unexpected(request)
        if scored is not None:  # the sampled requests' rows and V2 ids, for their spans
            for item in together + explains:
                if item.trace_id is not None:
                    scored[item.index] = (1 if isinstance(item.rows, list) else len(item.rows), None, item.parsed_at)
            for infer in infers:
                if infer.trace_id is not None:
                    scored[infer.index] = (len(infer.request.X), infer.request.id or None, infer.parsed_at)
        metrics = state.metrics
        scoring_started = time.perf_counter()
        for group, score in (
            (together, _answered(partial(score_together, served, metrics))),
            (explains, _answered(partial(score_explained, served, metrics))),
        ):
            if group:
                self._score_group(score, group, requests, answers)
        if infers:
            self._score_group(partial(answer_infers, served, metrics, self.model_name), infers, requests, answers)
        return scoring_started, time.perf_counter()

    def _score_group(
        self,
        score: Callable[[list[Grouped]], list[Answer]],
        group: list[Grouped],
        requests: list[Request],
        answers: list[Answer | None],
    ) -> None:
        """The answers to ``group`` from one scoring call; if that call fails, each request alone, so that only the
        one at fault fails."""
        try:
            scored = score(group)
        except Exception:
            logger.exception("scoring %d requests together failed; scoring each alone", len(group))
            for item in group:
                try:
                    answers[item.index] = score([item])[0]
                except Exception:
                    answers[item.index] = _unexpected(requests[item.index])
            return
        for item, answer in zip(group, scored, strict=True):
            answers[item.index] = answer


def _answered(
    bodies: Callable[[list[ParsedRequest]], list[bytes]],
) -> Callable[[list[ParsedRequest]], list[Answer]]:
    """A /predict scoring step whose bodies are 200 answers."""
    return lambda group: [Answer(200, body) for body in bodies(group)]


def _trace_id(traces: list[Trace | None], index: int) -> str | None:
    trace = traces[index]
    return None if trace is None else trace.trace_id.hex()


def _unexpected(request: Request) -> Answer:
    """A 500 for ``request`` alone, in its route's error format; the cause goes to the log (with the request's trace
    id when it came with one, to join the line to its trace)."""
    parent = None if request.trace_context is None else parse_traceparent(request.trace_context[0])
    trace = f" trace_id={parent[0].hex()}" if parent is not None else ""
    logger.exception("unexpected error answering %s%s", request.route, trace)
    return error_answer(InternalError(), v2=request.route in V2_ROUTES)
