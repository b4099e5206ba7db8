"""Small ASGI helpers shared by the hot path and the Starlette handlers: body reading and JSON responses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive

from server.errors import ApiError, ClientDisconnected, PayloadTooLarge

ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY
JSON_HEADER = (b"content-type", b"application/json")
CLOSE_HEADER = (b"connection", b"close")


class OrjsonResponse(Response):
    """A JSON response rendered by orjson, numpy scalars and arrays included."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=ORJSON_NUMPY)


def is_json(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes.

    Raises :class:`ClientDisconnected` when the client leaves before the body is complete.
    """
    if content_length is not None:
        if not content_length.isdigit():
            raise ApiError("Content-Length is not a number")
        if int(content_length) > limit:
            raise PayloadTooLarge(f"body of {int(content_length)} bytes exceeds the limit of {limit}")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
