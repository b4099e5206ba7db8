"""The ``ApiError`` family: each error knows its status code; one handler renders them all as JSON."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status_code = 400

    def __init__(self, detail: Any) -> None:
        super().__init__(str(detail))
        self.detail = detail


class MalformedJson(ApiError):
    status_code = 400


class PayloadTooLarge(ApiError):
    status_code = 413


class UnsupportedMediaType(ApiError):
    status_code = 415


class ValidationFailed(ApiError):
    """422 with ``detail`` a list of ``{"loc", "msg", "type"}``, the shape FastAPI clients know."""

    status_code = 422


class NotReady(ApiError):
    status_code = 503


def field_error(loc: list[str | int], msg: str, error_type: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": error_type}
