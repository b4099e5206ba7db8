"""The ``ApiError`` family: each error knows its status code and renders its own JSON body; one handler for all.

Starlette's own ``HTTPException`` (404, 405 from routing) is rendered by the same handler through
:func:`error_body`. A V2 protocol error is an ``ApiError`` whose body is the protocol's ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

MAX_ECHO_DEPTH = 32  # an error body echoes at most this deep into what the client sent


def dumps_safely(content: Any) -> bytes:
    """JSON for an error body, whatever it echoes: strings JSON cannot carry (lone surrogates) are escaped, and
    anything nested too deep or of an unknown type is replaced by its text."""
    try:
        return orjson.dumps(content)
    except TypeError:  # orjson.JSONEncodeError: a surrogate, a depth past orjson's limit, an unknown type
        return orjson.dumps(_printable(content, MAX_ECHO_DEPTH))


def _printable(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth <= 0:
        return "..."
    if isinstance(value, dict):
        return {_printable(str(key), depth): _printable(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(item, depth - 1) for item in value]
    return _printable(repr(value), depth)


SHOWN_CHARS = 80  # an error message quotes at most this much of a client's value
SHOWN_ITEMS = 8  # ... and looks at most this many items of a list or an object, this deep
SHOWN_DEPTH = 3


def shown(value: Any) -> str:
    """A client's value as an error message quotes it (``repr``-like), bounded however deep, long or wide it is:
    the one printer for client values, so a message never costs more than its size, nor raises."""
    text = repr(_bounded(value, SHOWN_DEPTH))
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _bounded(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "..."
    if value is None or isinstance(value, bool | float) or (isinstance(value, int) and -(10**20) < value < 10**20):
        return value
    if isinstance(value, int):
        return _Text(f"<a number of {len(str(abs(value)))} digits>" if value.bit_length() < 10_000 else "<a number>")
    if depth <= 0:
        return _Text("...")
    if isinstance(value, dict):
        items = [(_bounded(str(key), 0), _bounded(item, depth - 1)) for key, item in _first(value.items())]
        return dict(items) if len(value) <= SHOWN_ITEMS else {**dict(items), _Text("..."): _Text("...")}
    if isinstance(value, list | tuple):
        items = [_bounded(item, depth - 1) for item in _first(value)]
        return items if len(value) <= SHOWN_ITEMS else [*items, _Text("...")]
    return _Text(type(value).__name__)


def _first(items: Any) -> list[Any]:
    found: list[Any] = []
    for item in items:
        if len(found) == SHOWN_ITEMS:
            break
        found.append(item)
    return found


class _Text(str):
    """Printed as it is, not quoted."""

    def __repr__(self) -> str:
        return str(self)


class ApiError(Exception):
    status_code = 400
    closes_connection = False  # answered before the body was read: the connection cannot carry another request

    def __init__(self, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.detail = detail
        self.headers = dict(headers) if headers else None

    def body(self) -> bytes:
        return dumps_safely({"detail": self.detail})


class MalformedJson(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    """401: no valid API key; says how to authenticate."""

    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"www-authenticate": 'Bearer realm="ml-pulsechecker"'})


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class MethodNotAllowed(ApiError):
    status_code = 405


class PayloadTooLarge(ApiError):
    status_code = 413
    closes_connection = True


class UnsupportedMediaType(ApiError):
    status_code = 415


class ValidationFailed(ApiError):
    """422 with ``detail`` a list of ``{"loc", "msg", "type"}``, the shape FastAPI clients know."""

    status_code = 422


class NotReady(ApiError):
    status_code = 503


class InternalError(ApiError):
    """500 for one request that failed in a way no check foresaw; the cause goes to the log, never to the client."""

    status_code = 500

    def __init__(self) -> None:
        super().__init__("Internal Server Error")


class Overloaded(ApiError):
    """503 with ``Retry-After``: a per-worker limit is reached (bodies being read); another worker or a retry
    will do."""

    status_code = 503
    closes_connection = True

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"retry-after": "1"})


class V2Error(ApiError):
    """An Open Inference Protocol error: the protocol's ``{"error": "..."}`` body, any status code."""

    def __init__(self, message: str, status_code: int = 400, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, headers)
        self.status_code = status_code

    @classmethod
    def of(cls, error: ApiError) -> V2Error:
        """``error`` (status, headers, connection handling) with the protocol's body."""
        converted = cls(str(error.detail), error.status_code, error.headers)
        converted.closes_connection = error.closes_connection
        return converted

    def body(self) -> bytes:
        return dumps_safely({"error": self.detail})


class ClientDisconnected(Exception):
    """The client went away before sending its whole body: nothing to answer, nothing to count."""


INTERNAL_ERROR_BODY = b'{"detail":"Internal Server Error"}'
CLIENT_CLOSED = 499  # what nginx calls a request the client abandoned; sent to nobody, never counted


def field_error(loc: list[str | int], msg: str, error_type: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": error_type}
