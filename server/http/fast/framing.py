"""How the connection path frames what it writes: whole answers as HTTP/1.1 bytes, refusals, the descriptor ceiling."""

from __future__ import annotations

import resource

from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.server import ServerState

from server.pipeline.answer import Answer

DESCRIPTOR_RESERVE = 32  # descriptors kept for the model, logs, metrics snapshots and the listening socket


class Refusal(Exception):
    """Raised inside a parser callback to stop parsing; answered by :meth:`GuardedProtocol.refuse`."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


_default_headers: tuple[object, bytes] = (None, b"")


def default_headers(server_state: ServerState) -> bytes:
    """uvicorn's default headers (its ``date``, renewed every second), as bytes, rebuilt only when renewed."""
    global _default_headers
    found, rendered = _default_headers
    if found is not server_state.default_headers:
        rendered = b"".join(b"%s: %s\r\n" % (name, value) for name, value in server_state.default_headers)
        _default_headers = (server_state.default_headers, rendered)
    return rendered


def framed(answer: Answer, close: bool, default: bytes) -> bytes:
    """``answer`` as HTTP/1.1 bytes: the status line, uvicorn's default headers, the answer's, the body."""
    fields = b"".join(b"%s: %s\r\n" % field for field in answer.headers(close))
    return b"".join([STATUS_LINE[answer.status], default, fields, b"\r\n", answer.body])


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
