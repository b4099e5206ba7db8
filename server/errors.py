"""The ``ApiError`` family: each error knows its status code and renders its own JSON body; one handler for all.

Starlette's own ``HTTPException`` (404, 405 from routing) is rendered by the same handler through
:func:`error_body`. A V2 protocol error is an ``ApiError`` whose body is the protocol's ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


class ApiError(Exception):
    status_code = 400

    def __init__(self, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.detail = detail
        self.headers = dict(headers) if headers else None

    def body(self) -> bytes:
        return orjson.dumps({"detail": self.detail})


class MalformedJson(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404


class MethodNotAllowed(ApiError):
    status_code = 405


class PayloadTooLarge(ApiError):
    status_code = 413


class UnsupportedMediaType(ApiError):
    status_code = 415


class ValidationFailed(ApiError):
    """422 with ``detail`` a list of ``{"loc", "msg", "type"}``, the shape FastAPI clients know."""

    status_code = 422


class NotReady(ApiError):
    status_code = 503


class V2Error(ApiError):
    """An Open Inference Protocol error: the protocol's ``{"error": "..."}`` body, any status code."""

    def __init__(self, message: str, status_code: int = 400, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, headers)
        self.status_code = status_code

    def body(self) -> bytes:
        return orjson.dumps({"error": self.detail})


class ClientDisconnected(Exception):
    """The client went away before sending its whole body: nothing to answer, nothing to count."""


INTERNAL_ERROR_BODY = b'{"detail":"Internal Server Error"}'


def field_error(loc: list[str | int], msg: str, error_type: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": error_type}
