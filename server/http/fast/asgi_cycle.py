"""One request the connection hands to the ASGI application: its ``receive`` and ``send``, as the ASGI HTTP spec
(2.3) says, over the connection's transport.

Everything that is not the pipeline's own path (health under load aside) goes this way: Starlette's routes, and
the pipeline's ASGI door for a ``/predict`` the connection does not take itself (chunked, ``Expect:
100-continue``, pipelined behind another request, a key problem). What it owns: ``100 Continue`` on the first
``receive``, the response head with the worker's ``date``, ``Content-Length`` or chunked framing, no body for
``HEAD``, ``Connection: close`` when the app or the client asks for it, and waiting while the transport's buffer is
full (``pause_writing``) so that a client that does not read cannot make the worker buffer a whole response.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from server.core.errors import INTERNAL_ERROR_BODY
from server.http.fast.framing import CONTINUE, DATE, status_line


class Connection(Protocol):
    """What a request needs of its connection (``server.http.fast.protocol.Connection``)."""

    transport: asyncio.Transport
    write_paused: bool
    writable: asyncio.Event

    def write(self, data: bytes) -> None: ...
    def pause_reading(self, reason: str) -> None: ...
    def resume_reading(self, reason: str) -> None: ...
    def answered(self, exchange: Any, keep_alive: bool) -> None: ...


logger = logging.getLogger("server.http")
access_logger = logging.getLogger("server.access")

BODY_HIGH_WATER = 64 * 1024  # request body bytes buffered before the connection stops reading until the app reads
INTERNAL_ERROR_HEAD = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(
    INTERNAL_ERROR_BODY
)


class ProtocolViolation(RuntimeError):
    """The application sent messages out of the ASGI order."""


class AsgiCycle:
    """One request and its response, between the connection and the ASGI app."""

    __slots__ = (
        "access",
        "body",
        "chunked",
        "connection",
        "delivered",
        "disconnected",
        "expect_100_continue",
        "head_only",
        "keep_alive",
        "message_event",
        "more_body",
        "on_response",
        "response_complete",
        "response_started",
        "scope",
        "started",
    )

    def __init__(
        self, connection: Connection, scope: dict[str, Any], keep_alive: bool, expect_100_continue: bool
    ) -> None:
        self.connection = connection
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_100_continue = expect_100_continue
        self.head_only = scope["method"] == "HEAD"
        self.body = bytearray()
        self.more_body = True
        self.delivered = False  # the body's last message was received by the app
        self.disconnected = False
        self.started = False  # the app was called (a pipelined request waits for the one before it)
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.message_event = asyncio.Event()
        self.on_response: Any = None  # called once the response is complete (a refusal waiting behind it)
        self.access: str | None = None  # the access log's client and request line (PULSE_ACCESS_LOG)

    # The connection's side ----------------------------------------------------------------------------------------
    def append(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > BODY_HIGH_WATER:
            self.connection.pause_reading("body")
        self.message_event.set()

    def end_body(self) -> None:
        self.more_body = False
        self.message_event.set()

    def lost(self) -> None:
        self.disconnected = True
        self.message_event.set()

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:  # the worker's graceful period is over: it is cut off, not failed
            self.keep_alive = False
            raise
        except BaseException as exc:
            logger.error("exception in ASGI application", exc_info=exc)
            self._fail()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.response_complete and not self.disconnected:
                logger.error("ASGI application returned without completing its response")
                self._fail()

    def _fail(self) -> None:
        """A 500 when nothing was sent yet; otherwise the response is cut off (the connection closes)."""
        connection = self.connection
        if self.response_complete or self.disconnected or connection.transport.is_closing():
            return
        self.keep_alive = False
        if not self.response_started:
            self.response_started = True
            connection.write(status_line(500) + DATE.current() + INTERNAL_ERROR_HEAD + INTERNAL_ERROR_BODY)
        self._complete()

    # The application's side ---------------------------------------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        if self.expect_100_continue and not self.connection.transport.is_closing():
            self.expect_100_continue = False
            self.connection.write(CONTINUE)
        # Once the whole body is delivered, the next receive waits for the client to leave (or the response to end).
        while (
            not self.disconnected
            and not self.response_complete
            and (self.delivered or self.more_body and not self.body)
        ):
            self.connection.resume_reading("body")
            self.message_event.clear()
            await self.message_event.wait()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        body, self.body = bytes(self.body), bytearray()
        self.connection.resume_reading("body")
        self.delivered = not self.more_body
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        connection = self.connection
        if connection.write_paused:
            await connection.writable.wait()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise ProtocolViolation(f"expected http.response.start, got {kind!r}")
            self.response_started = True
            connection.write(self._head(message["status"], message.get("headers", ())))
            if self.access is not None:
                access_logger.info("%s %d", self.access, message["status"])
        elif not self.response_complete:
            if kind != "http.response.body":
                raise ProtocolViolation(f"expected http.response.body, got {kind!r}")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not self.head_only:
                if self.chunked:
                    if body:
                        connection.write(b"%x\r\n%s\r\n" % (len(body), body))
                    if not more:
                        connection.write(b"0\r\n\r\n")
                elif body:
                    connection.write(body)
            if not more:
                self._complete()
        else:
            raise ProtocolViolation(f"{kind!r} after the response was complete")

    def _head(self, status: int, headers: Any) -> bytes:
        parts = [status_line(status), DATE.current()]
        has_length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                has_length = True
            elif lowered == b"transfer-encoding":
                continue  # the framing is ours to choose
            elif lowered == b"connection" and value.lower().strip() == b"close":
                self.keep_alive = False
            parts.append(b"%s: %s\r\n" % (name, value))
        if not has_length and not self.head_only and status >= 200 and status not in (204, 304):
            self.chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            if not any(name.lower() == b"connection" for name, _ in headers):
                parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _complete(self) -> None:
        self.response_complete = True
        self.message_event.set()
        self.connection.answered(self, self.keep_alive)
        if self.on_response is not None:
            self.on_response()
