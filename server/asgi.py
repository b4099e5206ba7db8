"""Small ASGI helpers shared by the hot path and the Starlette handlers: body reading, with the per-worker bound
on the memory of bodies being read, and JSON responses."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive

from server.errors import ApiError, ClientDisconnected, Overloaded, PayloadTooLarge, UnsupportedMediaType

ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY
JSON_HEADER = (b"content-type", b"application/json")
CLOSE_HEADER = (b"connection", b"close")
GATED_BODY_BYTES = 16 * 1024  # bodies this large (about 100 rows) go through the BatchGate


class OrjsonResponse(Response):
    """A JSON response rendered by orjson, numpy scalars and arrays included."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=ORJSON_NUMPY)


def media_type(content_type: bytes) -> bytes:
    return content_type.split(b";", 1)[0].strip().lower()


def is_json(content_type: bytes) -> bool:
    return media_type(content_type) == b"application/json"


def refuse_encoded(content_encoding: bytes | None) -> None:
    """415 for a compressed body (any Content-Encoding but identity): bodies are read as they are sent."""
    if content_encoding is not None and content_encoding.strip().lower() not in (b"", b"identity"):
        raise UnsupportedMediaType(f"Content-Encoding {content_encoding.decode('latin-1')!r} is not supported")


class BodyBudget:
    """The bytes of request bodies this worker is holding while it reads them, bounded: a flood of slow or
    half-sent bodies gets 503s instead of the worker's memory. Content-Length is reserved up front."""

    __slots__ = ("held", "limit", "rejected")

    def __init__(self, limit: int, rejected: MutableMapping[tuple[str, int], int]) -> None:
        self.limit = limit
        self.held = 0
        self.rejected = rejected  # the metrics' refusal counters

    def take(self, n: int) -> None:
        if not self.reserve(n):
            self.rejected[("body_memory", 503)] += 1
            raise Overloaded("too many request bodies being read; retry shortly")

    def reserve(self, n: int) -> bool:
        """Hold ``n`` bytes if they fit; whether they did (nothing is counted)."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True


class BatchGate:
    """Large bodies are parsed and scored ``concurrency`` at a time, and each hands the gate on only after the
    event loop has had a turn for other I/O. Each 1000-row batch holds the loop for milliseconds; without the gate
    the loop runs every batch whose body is complete back to back, and /health waits behind all of them."""

    __slots__ = ("_semaphore",)

    def __init__(self, concurrency: int) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.sleep(0)  # the loop polls sockets (probes included) before the next batch runs
        finally:
            self._semaphore.release()


async def read_body(receive: Receive, content_length: bytes | None, limit: int, budget: BodyBudget) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes and (503) when ``budget``
    cannot hold it.

    Raises :class:`ClientDisconnected` when the client leaves before the body is complete.
    """
    taken = 0
    if content_length is not None:
        if not (content_length.isdigit() and len(content_length) <= 18):  # int() refuses over 4,300 digits
            content_length = content_length.strip()  # the parser lets optional whitespace through
            if not (content_length.isdigit() and len(content_length) <= 18):
                raise ApiError("Content-Length is not a number")
        if int(content_length) > limit:
            raise PayloadTooLarge(f"body of {int(content_length)} bytes exceeds the limit of {limit}")
        taken = int(content_length)
        budget.take(taken)
    try:
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
            if size > taken:  # no (or a false) Content-Length: hold the budget for what arrived
                budget.take(size - taken)
                taken = size
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        budget.held -= taken
