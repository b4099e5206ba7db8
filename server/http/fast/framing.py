"""How the connection writes HTTP/1.1: status lines rendered once, one ``date`` header a second, whole answers as
bytes, refusals, the descriptor ceiling."""

from __future__ import annotations

import email.utils
import http
import resource
import time

from server.pipeline.answer import Answer

DESCRIPTOR_RESERVE = 32  # descriptors kept for the model, logs, metrics snapshots and the listening socket

STATUS_LINE = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in http.HTTPStatus
}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def status_line(status: int) -> bytes:
    """The status line of ``status``, one not in the registry included (an ASGI app may send any 3-digit code)."""
    return STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status


class Refusal(Exception):
    """Raised inside a parser callback to stop parsing; answered by :meth:`Connection.refuse`."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class DateHeader:
    """The ``date`` header field as bytes, rendered at most once a second (RFC 9110 6.6.1 asks for one per
    response; its resolution is a second)."""

    __slots__ = ("_second", "field")

    def __init__(self) -> None:
        self._second = -1
        self.field = b""

    def current(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self.field = b"date: %s\r\n" % email.utils.formatdate(second, usegmt=True).encode()
        return self.field


DATE = DateHeader()


MAX_TEMPLATES = 256  # kinds of answer kept rendered (a V2 binary answer's header length makes kinds of its own)
_Template = tuple[bytes, bytes, bytes]  # before the date, between the date and the length, after the length
_templates: dict[tuple[int, bytes, tuple[tuple[bytes, bytes], ...], bool], _Template] = {}


def framed(answer: Answer, close: bool) -> bytes:
    """``answer`` as HTTP/1.1 bytes: the status line, the date, the answer's headers, the body. Everything but the
    date and the length is rendered once per kind of answer (a handful: 200 JSON, 200 binary, the errors)."""
    close = close or answer.close
    key = (answer.status, answer.content_type, answer.extra, close)
    template = _templates.get(key)
    if template is None:
        template = _template(answer, close)
        if len(_templates) < MAX_TEMPLATES:
            _templates[key] = template
    before, between, after = template
    body = answer.body
    return b"%s%s%s%d%s%s" % (before, DATE.current(), between, len(body), after, body)


def _template(answer: Answer, close: bool) -> _Template:
    extra = b"".join(b"%s: %s\r\n" % field for field in answer.extra_headers(close))
    return (
        status_line(answer.status),
        b"content-type: %s\r\ncontent-length: " % answer.content_type,
        b"\r\n" + extra + b"\r\n",
    )


def connection_ceiling() -> int:
    """Open connections at which a worker closes new ones unanswered: a few below its descriptor limit, which is
    raised to the hard limit first (as nginx's ``worker_rlimit_nofile`` does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - a sandbox that refuses: keep the soft limit
            pass
    limit = int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    return limit - DESCRIPTOR_RESERVE
