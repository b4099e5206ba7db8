"""One HTTP/1.1 connection, on httptools' public parser and ``asyncio.Protocol``: the server's own connection path.

It owns what a server facing untrusted clients must decide, while parsing:

- header bytes (431 as soon as a read takes the unfinished head past the cap) and header count (431);
- a deadline for the head from the connection's start or the request's first byte, and one for the body from the
  end of the head (408, then close): whole-phase deadlines, so a client dribbling a byte a second gains nothing;
  an idle kept-alive connection is closed after ``KEEP_ALIVE_SECONDS``;
- open connections per worker: above ``max_connections`` a connection may still ask ``/health`` or ``/ready``
  (probes keep working under a connection flood; a probe is answered as soon as it is read, never behind queued
  batch work) but anything else gets 503 with ``Retry-After``; a few descriptors below the process's limit, new
  connections are closed at once;
- RFC 9112's ``Host`` rule (exactly one in HTTP/1.1: 400 otherwise);
- pipelined requests answered in order; a request that parses, followed by bytes that do not, is answered before
  the 400 for the garbage;
- with ``PULSE_MAX_IN_FLIGHT``, a request over the bound gets 503 with ``Retry-After`` as soon as its head is read
  (probes excepted), before its body, which is then read and dropped on a kept connection (closed when the client
  waits for ``100-continue``);
- an upgrade request (WebSocket, h2c) is answered as plain HTTP and the connection closed after it;
- write flow control: while the transport's buffer is full the connection stops reading, so a client that does not
  read its answers cannot make the worker buffer them.

Every refusal is a JSON body, counted in ``/metrics`` as ``pulse_http_rejected_total{reason, status}``; all but the
overload 503 close the connection. Nothing here runs per request unless a limit is near.

The connection is the fast door onto the request pipeline (``server.pipeline``): a ``POST /predict`` or V2 infer
request with a declared length, alone on its connection, never becomes an ASGI request. Its body goes to this
worker's :class:`~server.pipeline.coalesce.Coalescer`, which hands every request of the same event-loop turn to
the pipeline together and each answer back to :meth:`Connection.respond`. Everything else is an ASGI request
(:class:`~server.http.fast.asgi_cycle.AsgiCycle`) for the application.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

import httptools
import orjson

from server.core.access import PROBES, needed_scope
from server.core.errors import ApiError
from server.http.fast.asgi_cycle import AsgiCycle
from server.http.fast.framing import Refusal, framed
from server.pipeline.answer import OVERLOADED, Answer
from server.pipeline.coalesce import PendingRequest
from server.pipeline.head import RequestHead
from server.pipeline.pipeline import PREDICT_ROUTE

if TYPE_CHECKING:
    from server.config.settings import Settings
    from server.monitoring.metrics import Metrics
    from server.pipeline.coalesce import Coalescer

logger = logging.getLogger("server.http")
access_logger = logging.getLogger("server.access")  # a line per answer with PULSE_ACCESS_LOG

LINGER_SECONDS = 2.0  # after a refusal, read and drop what the client still sends, so it sees the answer
KEEP_ALIVE_SECONDS = 5.0  # an idle kept-alive connection is closed after this long (uvicorn's and nginx's default)
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}

Exchange = PendingRequest | AsgiCycle  # one request on the connection, from its head to its answer


class Worker(Protocol):
    """What a connection shares with the others of its worker (``server.http.fast.listener.Worker``)."""

    settings: Settings
    loop: asyncio.AbstractEventLoop
    metrics: Metrics
    coalescer: Coalescer
    app: Any
    app_state: dict[str, Any]
    address: tuple[str, int]
    scheme: str
    ceiling: int
    connections: set[Connection]
    tasks: set[asyncio.Task[None]]


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection within the limits of its worker's settings."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        settings = self.settings = worker.settings
        self.loop = worker.loop
        self.metrics = worker.metrics
        self.coalescer = worker.coalescer
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.client: tuple[str, int] | None = None
        self.active: Exchange | None = None  # the request being answered; only it writes
        self.waiting: deque[AsgiCycle] = deque()  # pipelined behind it, in order
        self.parsing: Exchange | None = None  # the request whose body is arriving
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_100_continue = False
        self.write_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self._read_pauses: set[str] = set()
        self._head_bytes = 0  # read since the last head ended
        self._max_head_bytes = settings.max_header_bytes
        self._max_headers = settings.max_headers
        self._access_log = settings.access_log
        self._probes_only = False
        self._deadline: float | None = None  # loop time at which _deadline_reason expires
        self._deadline_reason = ""
        self._lingering = False
        self._upgraded = False

    # Connections ----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        connections = self.worker.connections
        connections.add(self)
        open_connections = len(connections)
        self.metrics.connections = open_connections
        if open_connections >= self.worker.ceiling:
            self._count("too_many_connections", 503)
            self.transport.abort()  # no descriptors to spare for an answer
            return
        self._probes_only = open_connections > self.settings.max_connections
        head_timeout = self.settings.header_timeout_seconds
        self._arm(min(head_timeout, 1.0) if self._probes_only else head_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        for exchange in {self.active, self.parsing, *self.waiting}:
            if type(exchange) is PendingRequest:
                # A body that will never be answered: its budget back, and its bytes freed now.
                self.coalescer.release(exchange)
                exchange.chunks.clear()
                exchange.disconnected = True
            elif isinstance(exchange, AsgiCycle):
                exchange.lost()
        self.waiting.clear()
        self.writable.set()  # a response waiting for room hears that the client is gone
        self.worker.connections.discard(self)
        self.metrics.connections = len(self.worker.connections)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()
        self.pause_reading("write")

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()
        self.resume_reading("write")

    def pause_reading(self, reason: str) -> None:
        if not self._read_pauses and not self.transport.is_closing():
            self.transport.pause_reading()
        self._read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self._read_pauses:
            self._read_pauses.discard(reason)
            if not self._read_pauses and not self.transport.is_closing():
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def shutdown(self) -> None:
        """The worker is stopping: close now when idle, else after the answers under way."""
        if self.active is None and self.parsing is None:
            self.transport.close()
            return
        for exchange in {self.active, self.parsing, *self.waiting}:
            if exchange is not None:
                exchange.keep_alive = False

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._upgraded:
            return
        if self._deadline_reason == "keep_alive":
            self._disarm()
        if self.parsing is None:  # between requests or inside a head: these bytes are head bytes
            self._head_bytes += len(data)  # (on_headers_complete starts the count again)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # no WebSocket or h2c here: the request is answered as plain HTTP
            self._upgraded = True  # and the connection closed after it: what follows is not HTTP/1.1
            last = self._last()
            if last is None:
                self.transport.close()
            else:
                last.keep_alive = False
            return
        except httptools.HttpParserError as exc:
            refusal = exc.__context__ if isinstance(exc.__context__, Refusal) else None
            self._refuse_after_current(refusal or Refusal(400, "malformed", "invalid HTTP request"))
            return
        # The deadlines, set only when a read leaves a head or a body unfinished (never on the one-read request).
        parsing = self.parsing
        if parsing is not None and (not parsing.response_complete or type(parsing) is PendingRequest):
            if self._deadline is None:
                self._arm(self.settings.body_timeout_seconds, "body_timeout")
        elif self._head_bytes > 0:
            if self._head_bytes > self._max_head_bytes:
                limit = self._max_head_bytes
                self.refuse(Refusal(431, "header_too_large", f"request head exceeds {limit} bytes"))
            elif self._deadline is None:
                self._arm(self.settings.header_timeout_seconds, "header_timeout")
        elif self._deadline is not None and self._deadline_reason != "keep_alive":  # the request came whole
            self._disarm()

    # Parser callbacks -----------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp keeps a value's trailing whitespace, which RFC 9110 5.5 leaves out. The head's size and count are
        # checked once it is complete (a head still arriving is measured in data_received).
        self.headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        self._head_bytes = 0
        head = RequestHead.scan(self.headers)
        if head.size + len(self.url) > self._max_head_bytes:
            raise Refusal(431, "header_too_large", f"request head exceeds {self._max_head_bytes} bytes")
        if len(self.headers) > self._max_headers:
            raise Refusal(431, "too_many_headers", f"more than {self._max_headers} header fields")
        parser = self.parser
        version = parser.get_http_version()
        if head.hosts != 1 and version == "1.1":
            raise Refusal(400, "bad_host", f"an HTTP/1.1 request needs exactly one Host header, got {head.hosts}")
        self.expect_100_continue = head.expects_continue
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            raise Refusal(400, "malformed", "invalid request target") from None
        path = parsed.path
        if self._probes_only and path not in PROBES:
            raise Refusal(503, "too_many_connections", "too many open connections; retry shortly")
        idle = self.active is None
        keep_alive = version != "1.0" and parser.should_keep_alive()
        method = parser.get_method()
        if idle and path in PROBES and method == b"GET" and parsed.query is None:
            # Answered as soon as its message is complete, in this read: never behind queued batch turns.
            probe = PendingRequest(self, keep_alive and not self._probes_only, time.perf_counter())
            probe.probe = True
            self.active = self.parsing = probe
            if self._access_log:
                probe.access = self._request_line()
            return
        if idle and not self.expect_100_continue:
            native = self._native_request(method, path, keep_alive, head)
            if native is not None:
                self.active = self.parsing = native
                if self._access_log:
                    native.access = self._request_line()
                if not self.coalescer.state.admission.admit():
                    # PULSE_MAX_IN_FLIGHT: answered now, before the body, which is then read and dropped.
                    self.coalescer.release(native)
                    native.shed = True
                    self.respond(native, OVERLOADED, False, complete=False)
                    return
                native.admitted = True
                native.query = parsed.query or b""  # /predict?explain=K: its reasons, coalesced like the rest
                if head.traceparent is not None:
                    native.trace_context = head.trace_context()  # for tracing, when it is on
                return
        try:
            decoded = unquote(path.decode("ascii"))
        except UnicodeDecodeError:
            raise Refusal(400, "malformed", "invalid request target") from None
        scope = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": version,
            "server": self.worker.address,
            "client": self.client,
            "scheme": self.worker.scheme,
            "method": method.decode("ascii"),
            "root_path": "",
            "path": decoded,
            "raw_path": path,
            "query_string": parsed.query or b"",
            "headers": self.headers,
            "state": self.worker.app_state.copy(),
        }
        cycle = AsgiCycle(self, scope, keep_alive and not self._probes_only, self.expect_100_continue)
        self.parsing = cycle
        if self._access_log:
            cycle.access = self._request_line()
        if idle:
            self.active = cycle
            self._start(cycle)
        else:
            self.waiting.append(cycle)
            self.pause_reading("pipeline")  # one request answered at a time: the next waits in the socket

    def on_body(self, body: bytes) -> None:
        parsing = self.parsing
        if type(parsing) is PendingRequest:
            if not parsing.shed:
                parsing.chunks.append(body)
        elif isinstance(parsing, AsgiCycle) and not parsing.response_complete:
            parsing.append(body)

    def on_message_complete(self) -> None:
        parsing, self.parsing = self.parsing, None
        if type(parsing) is PendingRequest:
            parsing.more_body = False
            if parsing.shed:
                if parsing.response_complete and not self.transport.is_closing():
                    self.answered(parsing, True)
            elif parsing.probe:
                coalescer = self.coalescer
                answer = coalescer.pipeline.probe(self.url, parsing.started)
                self.respond(parsing, answer, coalescer.state.draining)
            else:
                self.coalescer.submit(parsing)
        elif isinstance(parsing, AsgiCycle):
            parsing.end_body()
            if parsing.response_complete and self.active is None:
                self._next()  # its answer went out before its body was in

    # The connection's own path: /predict and V2 infer -----------------------------------------------------------
    def _native_request(self, method: bytes, path: bytes, keep_alive: bool, head: RequestHead) -> PendingRequest | None:
        """This request on the connection's own path, its body's length reserved in the worker's body budget: a
        pipeline request (``POST /predict``, V2 infer) that the pipeline admits, with a Content-Length within the
        limit. ``None``: the ASGI door answers it, and refuses what is wrong with it, with the same pipeline."""
        pipeline = self.coalescer.pipeline
        route = pipeline.route_of(method, path)
        if route is None:
            return None
        if head.transfer_encoding or (
            pipeline.state.keys is not None
            and pipeline.key_error(needed_scope(route), path.decode("latin-1"), head) is not None
        ):
            return None
        try:
            length = pipeline.check_head(route, head)
        except ApiError:
            return None
        if length is None or length > self.settings.max_body_bytes:
            return None
        if not pipeline.state.body_budget.reserve(length):
            return None  # the ASGI door answers the 503
        version = pipeline.version_named(path) if route != PREDICT_ROUTE else None
        return PendingRequest(self, keep_alive, time.perf_counter(), route, length, head.header_length, version)

    def _request_line(self) -> str:
        """The access log's start of a line: the client and the request line (PULSE_ACCESS_LOG)."""
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        method = self.parser.get_method().decode("latin-1")
        return f'{client} - "{method} {self.url.decode("latin-1")} HTTP/{self.parser.get_http_version()}"'

    def _start(self, cycle: AsgiCycle) -> None:
        cycle.started = True
        worker = self.worker
        task = self.loop.create_task(cycle.run(worker.app))
        worker.tasks.add(task)
        task.add_done_callback(worker.tasks.discard)

    def respond(self, request: PendingRequest, answer: Answer, close: bool, complete: bool = True) -> None:
        """Write ``request``'s whole answer; ``complete=False`` when the request's body is still to come (the
        connection carries on once it has)."""
        request.response_started = request.response_complete = True
        if request.disconnected or self.transport.is_closing():
            return
        keep_alive = request.keep_alive and not close and not answer.close
        self.transport.write(framed(answer, not keep_alive))
        if request.access is not None:
            access_logger.info("%s %d", request.access, answer.status)
        if not keep_alive:
            self.transport.close()
        elif complete:
            self.answered(request, True)
        if request.on_response is not None:
            request.on_response()

    def answered(self, exchange: Exchange, keep_alive: bool) -> None:
        """``exchange``'s answer is written: close, or go on with the next request."""
        if not keep_alive:
            self.transport.close()
            return
        if self.transport.is_closing():
            return
        if exchange is self.active:
            self.active = None
        if self.parsing is exchange:
            return  # the rest of its body is read and dropped; the connection goes on after it
        self._next()

    def _next(self) -> None:
        """Start the next pipelined request, or read the next one."""
        if self.waiting:
            self.active = cycle = self.waiting.popleft()
            if not self.waiting:  # the last one parsed may still be waiting for the rest of its body
                self.resume_reading("pipeline")
            self._start(cycle)
            return
        self.resume_reading("pipeline")
        if self.parsing is None and self._deadline is None:
            self._arm(KEEP_ALIVE_SECONDS, "keep_alive")

    def _last(self) -> Exchange | None:
        """The request parsed last (the last to be answered)."""
        return self.waiting[-1] if self.waiting else self.active

    # Refusals and deadlines -----------------------------------------------------------------------------------
    def refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` and close, reading (and dropping) what the client still sends for a moment."""
        self._disarm()
        self._count(refusal.reason, refusal.status)
        if self.transport.is_closing():
            return
        retry = ((b"retry-after", b"1"),) if refusal.status == 503 else ()
        answer = Answer(refusal.status, orjson.dumps({"detail": refusal.message}), extra=retry, close=True)
        self.transport.write(framed(answer, True))
        self._lingering = True
        self.parser = httptools.HttpRequestParser(self)  # drop whatever the old parser buffered
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:  # TLS transports cannot half-close
            self.transport.close()

    def _refuse_after_current(self, refusal: Refusal) -> None:
        """Refuse now, or once the requests parsed before the bad bytes are answered."""
        last, parsing = self._last(), self.parsing
        if last is None or parsing is not None:  # the bad bytes are in a body: that request is lost with them
            if type(parsing) is AsgiCycle:
                parsing.lost()
            elif parsing is not None:
                parsing.disconnected = True
            self.refuse(refusal)
            return
        self.pause_reading("refusal")
        answered = last.on_response

        def answered_then_refuse() -> None:
            if answered is not None:
                answered()
            if not self.transport.is_closing():
                self.refuse(refusal)

        last.on_response = answered_then_refuse

    def _arm(self, seconds: float, reason: str) -> None:
        # A time and a reason: the worker's sweep (Worker.sweep) expires it, so arming costs no timer handle.
        self._deadline = self.loop.time() + seconds
        self._deadline_reason = reason

    def _disarm(self) -> None:
        self._deadline = None
        self._deadline_reason = ""

    def expire_by(self, now: float) -> None:
        """Act on this connection's deadline if it has passed by ``now`` (the worker's sweep calls it)."""
        deadline = self._deadline
        if deadline is not None and deadline <= now:
            self._expire(self._deadline_reason)

    def _expire(self, reason: str) -> None:
        self._deadline = None
        self._deadline_reason = ""
        if self.transport.is_closing():
            return
        if reason == "keep_alive":
            self.transport.close()
            return
        parsing: Any = self.parsing
        if type(parsing) is PendingRequest and parsing.shed:  # answered 503; its body never came
            self._count(reason, 408)
            self.transport.close()
            return
        if parsing is not None and not parsing.response_complete:
            if parsing.response_started:  # the app is answering already: let it finish, then close
                parsing.keep_alive = False
                return
            if type(parsing) is PendingRequest:
                parsing.disconnected = True
            else:
                parsing.lost()  # the app waiting for the body hears that the client is gone
        phase = "request head" if reason == "header_timeout" else "request body"
        self.refuse(Refusal(408, reason, f"{phase} not received in time"))

    def _count(self, reason: str, status: int) -> None:
        self.metrics.rejected[(reason, status)] += 1
