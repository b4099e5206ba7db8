"""uvicorn's httptools protocol with the limits a server facing untrusted clients needs.

uvicorn's own protocol parses headers of any size and count on the event loop, waits forever for a first request,
for the rest of a header and for a body, and accepts connections until the process runs out of descriptors. This
subclass (a protocol class is uvicorn's extension point: ``Config(http=...)``) bounds each, while parsing:

- header bytes (431 as soon as a read takes the unfinished head past the cap) and header count (431);
- a deadline for the head from the connection's start or the request's first byte, and one for the body from the
  end of the head (408, then close): whole-phase deadlines, so a client dribbling a byte a second gains nothing;
- open connections per worker: above ``max_connections`` a connection may still ask ``/health`` or ``/ready``
  (probes keep working under a connection flood; a probe is answered as soon as it is read, never behind queued
  batch work) but anything else gets 503 with ``Retry-After``; a few
  descriptors below the process's limit, new connections are closed at once;
- RFC 9112's ``Host`` rule (exactly one in HTTP/1.1: 400 otherwise);
- a request that parses, followed by bytes that do not, is answered before the 400 for the garbage;
- with ``PULSE_MAX_IN_FLIGHT``, a request over the bound gets 503 with ``Retry-After`` as soon as its head is read
  (probes excepted), before its body, which is then read and dropped on a kept connection (closed when the client
  waits for ``100-continue``).

Every refusal is a JSON body, counted in ``/metrics`` as ``pulse_http_rejected_total{reason, status}``; all but the
overload 503 close the connection. Nothing here runs per request unless a limit is near.

It is also the fast door onto the request pipeline (``server.pipeline``): a ``POST /predict`` or V2 infer request
with a declared length never becomes an ASGI request. Its body goes to this worker's
:class:`~server.http.fast.coalesce.Coalescer`, which hands every request of the same event-loop turn to the pipeline
together and each answer back to :meth:`GuardedProtocol.respond`. The fast mode only: ``server.http.fast.guard``
checks at start-up that the installed uvicorn has what this subclass uses, else the server runs uvicorn's own.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from server.config.settings import Settings
from server.core.errors import ApiError
from server.http.fast.coalesce import COALESCER_KEY, Coalescer, PendingRequest
from server.http.fast.framing import Refusal, default_headers, framed
from server.monitoring.metrics import METRICS_KEY, Metrics
from server.pipeline.answer import OVERLOADED, PROBE_PATHS, Answer
from server.pipeline.head import RequestHead

KEY_SCOPE = "predict"  # the API key scope the pipeline's routes need

LINGER_SECONDS = 2.0  # after a refusal, read and drop what the client still sends, so it sees the answer


class GuardedProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, as uvicorn's httptools protocol serves it, within the limits of ``settings``."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        settings: Settings,
        ceiling: int,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.settings = settings
        self.ceiling = ceiling  # open connections at which new ones are closed unanswered
        self.metrics: Metrics | None = app_state.get(METRICS_KEY)
        self.coalescer: Coalescer | None = app_state.get(COALESCER_KEY)
        self._head_bytes = 0  # read since the last head ended
        self._max_head_bytes = settings.max_header_bytes
        self._max_headers = settings.max_headers
        self._max_in_flight = settings.max_in_flight
        self._parsed_head_bytes = 0  # of the head being parsed: names, values and their separators
        self._host_count = 0
        self._probes_only = False
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False

    # Connections ----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        open_connections = len(self.connections)
        if self.metrics is not None:
            self.metrics.connections = open_connections
        if open_connections >= self.ceiling:
            self._count("too_many_connections", 503)
            transport.abort()  # no descriptors to spare for an answer
            return
        self._probes_only = open_connections > self.settings.max_connections
        head_timeout = self.settings.header_timeout_seconds
        self._arm(min(head_timeout, 1.0) if self._probes_only else head_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle: object = self.cycle
        if type(cycle) is PendingRequest and self.coalescer is not None:
            # A body that will never be answered: its budget back, and its bytes freed now (the request and this
            # connection refer to each other, so without this they would wait for the garbage collector).
            self.coalescer.release(cycle)
            cycle.chunks.clear()
        super().connection_lost(exc)
        if self.metrics is not None:
            self.metrics.connections = len(self.connections)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        cycle: Any = self.cycle  # uvicorn's cycle, or our PendingRequest in its place
        if cycle is None or not cycle.more_body:  # between requests or inside a head: these bytes are head bytes
            self._head_bytes += len(data)  # (on_headers_complete starts the count again)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn: no WebSocket here, the request is served as plain HTTP
            self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refusal = exc.__context__ if isinstance(exc.__context__, Refusal) else None
            self._refuse_after_current(refusal or Refusal(400, "malformed", "invalid HTTP request"))
            return
        # The deadlines, set only when a read leaves a head or a body unfinished (never on the one-read request).
        cycle = self.cycle
        if cycle is not None and cycle.more_body and (not cycle.response_complete or type(cycle) is PendingRequest):
            if self._deadline is None:
                self._arm(self.settings.body_timeout_seconds, "body_timeout")
        elif self._head_bytes > 0:
            if self._head_bytes > self._max_head_bytes:
                limit = self._max_head_bytes
                self.refuse(Refusal(431, "header_too_large", f"request head exceeds {limit} bytes"))
            elif self._deadline is None:
                self._arm(self.settings.header_timeout_seconds, "header_timeout")
        elif self._deadline is not None:  # the body came whole
            self._disarm()

    # Parser callbacks -----------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        # uvicorn's, less the ASGI scope: built in on_headers_complete, for the requests that go to the app.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, plus the count, the size and the Host rule; a head that arrived whole in one read
        # is measured here, one still arriving in data_received.
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which RFC 9110 5.5 leaves out of a value
        if name == b"host":
            self._host_count += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))
        self._parsed_head_bytes += len(name) + len(value) + 4
        if self._parsed_head_bytes > self._max_head_bytes:
            raise Refusal(431, "header_too_large", f"request head exceeds {self._max_head_bytes} bytes")
        if len(self.headers) > self._max_headers:
            raise Refusal(431, "too_many_headers", f"more than {self._max_headers} header fields")

    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        hosts, head_bytes = self._host_count, self._parsed_head_bytes + len(self.url)
        self._host_count = self._parsed_head_bytes = self._head_bytes = 0
        if head_bytes > self._max_head_bytes:
            raise Refusal(431, "header_too_large", f"request head exceeds {self._max_head_bytes} bytes")
        if hosts != 1 and self.parser.get_http_version() == "1.1":
            raise Refusal(400, "bad_host", f"an HTTP/1.1 request needs exactly one Host header, got {hosts}")
        if self._probes_only and httptools.parse_url(self.url).path not in PROBE_PATHS:
            raise Refusal(503, "too_many_connections", "too many open connections; retry shortly")
        if self._max_in_flight and self._overloaded():
            # Answered now, before the body: the body is then read and dropped on a kept connection (closed when
            # the client waits for 100-continue, as it may send no body at all).
            shed = PendingRequest(self, self._keep_alive() and not self.expect_100_continue, time.perf_counter())
            shed.shed = True
            self.cycle = shed  # type: ignore[assignment]
            self._count("overloaded", 503)
            self.respond(shed, OVERLOADED, False, complete=False)
            return
        if self.url in PROBE_PATHS and self.coalescer is not None and self.parser.get_method() == b"GET":
            cycle = self.cycle
            if cycle is None or cycle.response_complete:  # else behind this connection's unanswered request
                # Answered as soon as its message is complete, in this read: never behind queued batch turns.
                probe = PendingRequest(self, self._keep_alive() and not self._probes_only, time.perf_counter())
                probe.probe = True
                self.cycle = probe  # type: ignore[assignment]
                return
        native = self._native_request()
        if native is not None:
            self.cycle = native  # type: ignore[assignment]
            return
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        super().on_headers_complete()
        if self._probes_only:
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        cycle: object = self.cycle  # uvicorn's cycle, or our PendingRequest in its place
        if type(cycle) is PendingRequest:
            if not cycle.shed:
                cycle.chunks.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle: object = self.cycle
        if type(cycle) is PendingRequest:
            cycle.more_body = False
            if cycle.shed:
                if not self.transport.is_closing():
                    self.on_response_complete()  # uvicorn's: the next pipelined request, or the keep-alive timer
            elif cycle.probe:
                coalescer: Any = self.coalescer
                self.respond(cycle, coalescer.pipeline.probe(self.url, cycle.started), coalescer.state.draining)
            else:
                self.coalescer.submit(cycle)  # type: ignore[union-attr]  # set whenever a PendingRequest exists
        else:
            super().on_message_complete()

    def _overloaded(self) -> bool:
        """More requests in flight in this worker than PULSE_MAX_IN_FLIGHT (probes are always answered; a request
        pipelined behind another waits its turn as usual, so that answers keep their order)."""
        coalescer = self.coalescer
        in_flight = len(self.tasks) + (coalescer.queued if coalescer is not None else 0)
        cycle = self.cycle
        return (
            in_flight >= self._max_in_flight
            and (cycle is None or cycle.response_complete)
            and httptools.parse_url(self.url).path not in PROBE_PATHS
        )

    # The connection's own path: /predict and V2 infer -----------------------------------------------------------
    def _native_request(self) -> PendingRequest | None:
        """This request on the connection's own path, its body's length reserved in the worker's body budget: a
        pipeline request (``POST /predict``, V2 infer) that the pipeline admits, with a Content-Length within the
        limit, alone on its connection. ``None``: the ASGI door answers it, and refuses what is wrong with it, with
        the same pipeline."""
        coalescer = self.coalescer
        if coalescer is None or self.expect_100_continue:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None
        pipeline = coalescer.pipeline
        route = pipeline.route_of(self.parser.get_method(), self.url)
        if route is None:
            return None
        head = RequestHead.scan(self.headers)
        if head.transfer_encoding or pipeline.key_error(KEY_SCOPE, self.url.decode("latin-1"), head) is not None:
            return None
        try:
            length = pipeline.check_head(route, head)
        except ApiError:
            return None
        if length is None or length > self.settings.max_body_bytes:
            return None
        if not pipeline.state.body_budget.reserve(length):
            return None  # the ASGI door answers the 503
        return PendingRequest(self, self._keep_alive(), time.perf_counter(), route, length, head.header_length)

    def _keep_alive(self) -> bool:
        return self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"

    def respond(self, request: PendingRequest, answer: Answer, close: bool, complete: bool = True) -> None:
        """Write ``request``'s whole answer (uvicorn's default headers first, as for the app's responses);
        ``complete=False`` when the request's body is still to come (the connection carries on once it has)."""
        request.response_started = request.response_complete = True
        if request.disconnected or self.transport.is_closing():
            return
        keep_alive = request.keep_alive and not close and not answer.close
        self.transport.write(framed(answer, not keep_alive, default_headers(self.server_state)))
        if not keep_alive:
            self.transport.close()
        elif complete:
            self.on_response_complete()  # uvicorn's: the next pipelined request, or the keep-alive timer
        if request.on_response is not None:
            request.on_response()

    # Refusals and deadlines -----------------------------------------------------------------------------------
    def refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` and close, reading (and dropping) what the client still sends for a moment."""
        self._disarm()
        self._count(refusal.reason, refusal.status)
        if self.transport.is_closing():
            return
        retry = ((b"retry-after", b"1"),) if refusal.status == 503 else ()
        answer = Answer(refusal.status, orjson.dumps({"detail": refusal.message}), extra=retry, close=True)
        self.transport.write(framed(answer, True, default_headers(self.server_state)))
        self._lingering = True
        self.parser = httptools.HttpRequestParser(self)  # drop whatever the old parser buffered
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:  # pragma: no cover - TLS transports cannot half-close
            self.transport.close()

    def _refuse_after_current(self, refusal: Refusal) -> None:
        """Refuse now, or once the requests parsed before the bad bytes are answered."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.refuse(refusal)
            return
        self.flow.pause_reading()
        answered = cycle.on_response  # the last request parsed is the last answered

        def answered_then_refuse() -> None:
            if answered is not None:
                answered()
            if not self.transport.is_closing():
                self.refuse(refusal)

        cycle.on_response = answered_then_refuse

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle
        if type(cycle) is PendingRequest and cycle.shed and cycle.more_body:  # answered 503; its body never came
            self._count(reason, 408)
            self.transport.close()
            return
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # the app is answering already: let it finish, then close
                cycle.keep_alive = False
                return
            cycle.disconnected = True  # the app waiting for the body hears that the client is gone
            cycle.message_event.set()
        phase = "request head" if reason == "header_timeout" else "request body"
        self.refuse(Refusal(408, reason, f"{phase} not received in time"))

    def _count(self, reason: str, status: int) -> None:
        if self.metrics is not None:
            self.metrics.rejected[(reason, status)] += 1
