"""The worker's queue of complete pipeline requests, answered together once per event-loop turn.

Every door hands its pipeline requests here. A ``/predict`` or V2 infer request with a declared Content-Length
within the limits (JSON, or the V2 binary tensor extension, no Content-Encoding; its query, such as ``explain=K``,
goes along) does not become an ASGI task: its connection (``server.http.fast.protocol``) collects the body and hands
it here. The ASGI door (``server.http.asgi``: stock mode, chunked bodies) and the gRPC door (``ModelInfer``) hand
their complete bodies here and await the answer (:meth:`Coalescer.answer`). Every request handed over
during one event-loop turn goes to the pipeline together at the end of that turn (``loop.call_soon``), so the valid
``/predict`` rows of all of them are scored in one onnxruntime call; each answer is written to its own connection. A
request that arrives alone is answered in the same turn: nothing waits on a timer.

What onnxruntime costs per call (~6 us here, whatever the row count up to a few dozen) is paid once per turn
instead of once per request, and the per-request asyncio task, ASGI messages and scope are not built at all: for
1000-row batches that is 9-14% of a request's time. One turn answers at most ``TURN_BODY_BYTES`` of bodies; the rest
wait for the next turn, after the loop has polled its sockets, so probes are answered between batches, whichever
door the batches came by. Parsing, scoring, rendering and counting are the pipeline's
(``server.pipeline``): this module only queues and hands back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from server.pipeline.answer import Answer
from server.pipeline.pipeline import PREDICT_ROUTE, Pipeline, Request, TraceContext

TURN_BODY_BYTES = 64 * 1024  # bodies answered per event-loop turn: a 1000-row batch, or hundreds of single rows
COALESCER_KEY = "pulse.coalescer"  # lifespan state: how a worker's connections reach its coalescer
DRAIN_KEY = "pulse.drain"  # lifespan state: what the worker calls when a signal asks it to stop


class Responder(Protocol):
    """What a door offers the coalescer: deliver one whole answer (a connection writes it and carries on)."""

    def respond(self, request: PendingRequest, answer: Answer, close: bool) -> None: ...


class PendingRequest:
    """One request on the connection's own path (or a probe, or a request shed before its body), from its head to
    its answer."""

    __slots__ = (
        "access",
        "admitted",
        "chunks",
        "connection",
        "disconnected",
        "header_length",
        "keep_alive",
        "more_body",
        "on_response",
        "probe",
        "query",
        "reserved",
        "response_complete",
        "response_started",
        "route",
        "shed",
        "started",
        "trace_context",
        "version",
    )

    def __init__(
        self,
        connection: Responder,
        keep_alive: bool,
        started: float,
        route: str = PREDICT_ROUTE,
        reserved: int = 0,
        header_length: bytes | None = None,
        version: str | None = None,
    ) -> None:
        self.connection = connection
        self.keep_alive = keep_alive
        self.started = started
        self.route = route  # a pipeline route
        self.reserved = reserved  # bytes of the worker's body budget held for this body until it is answered
        self.admitted = False  # whether it holds a place in the worker's Admission, until it is answered
        self.query = b""  # the request target's query string (``explain=K``)
        self.header_length = header_length  # V2 binary tensor extension: the JSON header's length
        self.version = version  # the model version a versioned V2 path named
        self.chunks: list[bytes] = []
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.shed = False  # refused (503) for overload: its body is read and dropped
        self.probe = False  # a probe, answered by the connection itself once its message is complete
        self.on_response: Callable[[], None] | None = None  # called once its response is written
        self.access: str | None = None  # the access log's client and request line (PULSE_ACCESS_LOG)
        self.trace_context: TraceContext | None = None  # W3C Trace Context, when it came with a traceparent


class AwaitedRequest(PendingRequest):
    """A complete request whose door awaits its answer (a gRPC call, a request the ASGI app holds) rather than
    having it written for it: :meth:`Coalescer.answer`."""

    __slots__ = ("answered",)

    def __init__(
        self,
        started: float,
        route: str,
        body: bytes,
        query: bytes = b"",
        header_length: bytes | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__(AWAITED, True, started, route, 0, header_length, version)
        self.answered: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.chunks.append(body)
        self.query = query
        self.more_body = False


class _Awaited:
    """The responder of every :class:`AwaitedRequest`: the answer goes to the door that awaits it."""

    def respond(self, request: PendingRequest, answer: Answer, close: bool) -> None:
        assert isinstance(request, AwaitedRequest)
        if not request.answered.done():
            request.answered.set_result(answer)


AWAITED = _Awaited()


class Coalescer:
    """This worker's queue of complete request bodies, answered together once per event-loop turn."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.state = pipeline.state
        self._pending: list[PendingRequest] = []

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, request: PendingRequest) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.answer_all)  # after this turn's reads, before the next poll
        self._pending.append(request)

    async def answer(self, request: AwaitedRequest) -> Answer:
        """``request``'s answer, from the turn it joins now; what it holds is handed back once it is answered, or
        once its door stops waiting (its turn then skips it)."""
        self.submit(request)
        try:
            return await request.answered
        except asyncio.CancelledError:
            request.disconnected = True
            raise
        finally:
            self.release(request)

    def release(self, request: PendingRequest) -> None:
        """Hand back the body budget and the admission ``request`` holds (once: it is answered, or its client is
        gone; a second call changes nothing)."""
        self.state.body_budget.held -= request.reserved
        request.reserved = 0
        if request.admitted:
            request.admitted = False
            self.state.admission.release()

    def answer_all(self) -> None:
        pending = self._take_turn()
        taken, requests = [], []
        for request in pending:
            self.release(request)
            if request.disconnected:
                continue
            body = b"".join(request.chunks)
            request.chunks.clear()  # the connection keeps its last request until the next one
            taken.append(request)
            requests.append(
                Request(
                    request.route, request.query, body, request.started, request.header_length, request.version,
                    request.trace_context,
                )
            )  # fmt: skip
        answers = self.pipeline.answer(requests) if requests else []
        close = self.state.draining
        for request, answer in zip(taken, answers, strict=True):
            request.connection.respond(request, answer, close)

    def _take_turn(self) -> list[PendingRequest]:
        """The requests this turn answers: in order, up to ``TURN_BODY_BYTES`` of bodies (one at least); the rest
        get the next turn, after the loop has polled its sockets."""
        taken = size = 0
        for request in self._pending:
            taken += 1
            size += request.reserved  # its declared length, held until it is answered
            if size >= TURN_BODY_BYTES:
                break
        turn, self._pending = self._pending[:taken], self._pending[taken:]
        if self._pending:
            asyncio.get_running_loop().call_soon(self.answer_all)
        return turn
