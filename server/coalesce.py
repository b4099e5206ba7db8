"""``POST /predict`` and V2 ``infer`` answered by the connection itself, with concurrent ``/predict`` rows scored
together.

A ``/predict`` or V2 infer request with a declared Content-Length within the limits (JSON, or the V2 binary tensor
extension; no query string, no Content-Encoding) does not become an ASGI task: its connection (``server.protocol``)
collects the body and hands it here. Every request handed over during one event-loop turn is answered at the end
of that turn (``loop.call_soon``): each body is parsed and validated on its own, the valid ``/predict`` rows of all
of them go to onnxruntime in one call, and each response is written to its own connection. A request that arrives
alone is answered in the same turn, as before: nothing waits on a timer. A bad body is answered with its own 4xx
and takes no part in the call, so it cannot fail its neighbours.

What onnxruntime costs per call (~6 us here, whatever the row count up to a few dozen) is paid once per turn
instead of once per request, and the per-request asyncio task, ASGI messages and scope are not built at all: for
1000-row batches that is 9-14% of a request's time. One turn answers at most ``TURN_BODY_BYTES`` of bodies; the rest
wait for the next turn, after the loop has polled its sockets, so probes are answered between batches (what the
ASGI path's ``BatchGate`` does). The ASGI handlers in ``server.predict`` and ``server.v2`` serve every other
request, and these routes under other ASGI servers; both paths parse, score and render with the same functions
and answer byte for byte alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from server.errors import INTERNAL_ERROR_BODY, ApiError
from server.predict import ROUTE
from server.v2 import HEADER_LENGTH_BYTES, INFER_ROUTE, answer_infer
from server.validation import Columns

Parsed = list[float] | npt.NDArray[np.float32] | Columns  # a request's rows, as the parser gives them

if TYPE_CHECKING:
    import asyncio

    from server.predict import ServedModel
    from server.state import ServerState

logger = logging.getLogger(__name__)

TURN_BODY_BYTES = 64 * 1024  # bodies answered per event-loop turn: a 1000-row batch, or hundreds of single rows
COALESCER_KEY = "pulse.coalescer"  # lifespan state: how a worker's connections reach its coalescer


class Responder(Protocol):
    """What the connection offers the coalescer: write one whole response, then carry on with the connection."""

    def respond(
        self,
        request: PendingRequest,
        status: int,
        body: bytes,
        headers: bytes,
        close: bool,
        content_type: bytes = b"application/json",
    ) -> None: ...


class _Event:
    """uvicorn sets a cycle's ``message_event`` when the connection is lost; nothing waits on this one."""

    __slots__ = ()

    def set(self) -> None:
        pass


NO_EVENT = _Event()


class PendingRequest:
    """One request on the connection's own path; it stands where uvicorn keeps a connection's current request
    cycle, with the attributes uvicorn's protocol reads there."""

    __slots__ = (
        "chunks",
        "connection",
        "disconnected",
        "header_length",
        "keep_alive",
        "more_body",
        "on_response",
        "reserved",
        "response_complete",
        "response_started",
        "route",
        "shed",
        "started",
    )

    message_event = NO_EVENT

    def __init__(
        self,
        connection: Responder,
        keep_alive: bool,
        started: float,
        route: str = ROUTE,
        reserved: int = 0,
        header_length: str | None = None,
    ) -> None:
        self.connection = connection
        self.keep_alive = keep_alive
        self.started = started
        self.route = route  # ROUTE or INFER_ROUTE
        self.reserved = reserved  # bytes of the worker's body budget held for this body until it is answered
        self.header_length = header_length  # V2 binary tensor extension: the JSON header's length
        self.chunks: list[bytes] = []
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.shed = False  # refused (503) for overload: its body is read and dropped
        self.on_response: Callable[[], None] | None = None  # called once its response is written

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks))


class Coalescer:
    """This worker's queue of complete request bodies, answered together once per event-loop turn."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.infer_url = b"/v2/models/%s/infer" % state.settings.model_name.encode()
        self._loop = loop
        self._pending: list[PendingRequest] = []

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, request: PendingRequest) -> None:
        if not self._pending:
            self._loop.call_soon(self.answer_all)  # after every read of this turn, before the next poll
        self._pending.append(request)
        self.state.metrics.in_flight += 1

    def release(self, request: PendingRequest) -> None:
        """Hand back the body budget ``request`` holds (once: it is answered, or its connection is gone)."""
        self.state.body_budget.held -= request.reserved
        request.reserved = 0

    def answer_all(self) -> None:
        pending = self._take_turn()
        state = self.state
        served = state.served
        metrics = state.metrics
        if served is None:  # pragma: no cover - connections hand requests over only once a model is served
            raise RuntimeError("no model served")
        close = state.draining
        parsed: list[tuple[PendingRequest, Parsed, float]] = []
        try:
            for request in pending:
                self.release(request)
                if request.disconnected:
                    continue
                body = b"".join(request.chunks)
                request.chunks.clear()  # the connection keeps its last request until the next one
                if request.route == INFER_ROUTE:
                    self._answer_infer(served, request, body, close)
                    continue
                try:
                    rows = served.parser.parse(body)
                except ApiError as exc:
                    self._refuse(request, exc, close)
                    continue
                parsed.append((request, rows, time.perf_counter()))
            if parsed:
                self._score(served, parsed, close)
        except Exception:
            logger.exception("unexpected error in %s", " or ".join(sorted({r.route for r in pending})))
            for request in pending:
                if not request.response_complete and not request.disconnected:
                    self._respond(request, 500, INTERNAL_ERROR_BODY, b"", close)
        finally:
            metrics.in_flight -= len(pending)

    def _take_turn(self) -> list[PendingRequest]:
        """The requests this turn answers: in order, up to ``TURN_BODY_BYTES`` of bodies (one at least); the rest
        get the next turn, after the loop has polled its sockets."""
        taken = size = 0
        for request in self._pending:
            taken += 1
            size += request.size
            if size >= TURN_BODY_BYTES:
                break
        turn, self._pending = self._pending[:taken], self._pending[taken:]
        if self._pending:
            self._loop.call_soon(self.answer_all)
        return turn

    def _answer_infer(self, served: ServedModel, request: PendingRequest, body: bytes, close: bool) -> None:
        model_name = self.state.settings.model_name
        try:
            answer = answer_infer(self.state, served, model_name, body, request.header_length, request.started)
        except ApiError as exc:  # a V2Error: the protocol's error body
            self._refuse(request, exc, close)
            return
        if answer.header_length is None:
            self._respond(request, 200, answer.body, b"", close)
        else:
            headers = b"%s: %d\r\n" % (HEADER_LENGTH_BYTES, answer.header_length)
            self._respond(request, 200, answer.body, headers, close, answer.content_type)

    def _score(
        self,
        served: ServedModel,
        parsed: list[tuple[PendingRequest, Parsed, float]],
        close: bool,
    ) -> None:
        model, metrics, drift = served.model, self.state.metrics, self.state.metrics.drift
        call_started = time.perf_counter()
        if len(parsed) == 1 and type(parsed[0][1]) is list:
            values: Any = parsed[0][1]
            proba = np.array([model.predict_one(values)], dtype=np.float32)
            X = None
        else:
            X = _stack([rows for _, rows, _ in parsed])
            proba = model.churn_probability(X)
        scored = time.perf_counter()
        inference = scored - call_started
        metrics.observe_call(inference, len(proba))
        start = 0
        for request, rows, parsed_at in parsed:
            if type(rows) is list:
                payload = served.render_one(proba[start])
                start += 1
            elif type(rows) is Columns:
                payload = served.render_columns(proba[start : start + len(rows)])
                start += len(rows)
            else:
                payload = served.render_batch(proba[start : start + len(rows)])
                start += len(rows)
            rendered = time.perf_counter()
            metrics.observe_stages(ROUTE, parsed_at - request.started, inference, rendered - scored)
            self._respond(request, 200, payload, b"", close)
            scored = rendered
        if drift is not None:
            if X is None:
                drift.add(values, proba[0])
            else:
                drift.add_batch(X, proba)
        if served.request_log is not None:
            served.request_log.submit(np.array([values], dtype=np.float32) if X is None else X, proba)

    def _respond(
        self,
        request: PendingRequest,
        status: int,
        body: bytes,
        headers: bytes,
        close: bool,
        content_type: bytes = b"application/json",
    ) -> None:
        self.state.metrics.observe_request(request.route, status, time.perf_counter() - request.started)
        request.connection.respond(request, status, body, headers, close, content_type)

    def _refuse(self, request: PendingRequest, error: ApiError, close: bool) -> None:
        headers = b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in (error.headers or {}).items())
        self._respond(request, error.status_code, error.body(), headers, close or error.closes_connection)


def _stack(parts: list[Parsed]) -> npt.NDArray[np.float32]:
    """One float32 matrix of every request's rows, in order."""
    if all(type(part) is list for part in parts):
        return np.array(parts, dtype=np.float32)
    return np.concatenate([_matrix(part) for part in parts])


def _matrix(part: Parsed) -> npt.NDArray[np.float32]:
    if isinstance(part, list):
        return np.array([part], dtype=np.float32)
    return part.X if isinstance(part, Columns) else part
