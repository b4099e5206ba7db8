"""The ASGI door onto the pipeline: ``POST /predict`` and V2 infer as plain ASGI (no Request/Response objects, no
routing, no middleware), under uvicorn's own protocol or any ASGI server; and the body reading and JSON response
the Starlette handlers share.

The door only translates: the scope's headers go to the pipeline's head scan, the body is read within the limits
(:func:`read_body`), and the pipeline's :class:`~server.pipeline.answer.Answer` is sent as it is.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.core.errors import ApiError, ClientDisconnected, PayloadTooLarge
from server.core.limits import BodyBudget
from server.pipeline.answer import Answer
from server.pipeline.coalesce import AwaitedRequest, Coalescer
from server.pipeline.head import RequestHead

JSON_HEADER = (b"content-type", b"application/json")
CLOSE_HEADER = (b"connection", b"close")


class OrjsonResponse(Response):
    """A JSON response rendered by orjson, numpy scalars and arrays included."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def read_body(receive: Receive, content_length: int | None, limit: int, budget: BodyBudget) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes and (503) when ``budget``
    cannot hold it.

    Raises :class:`ClientDisconnected` when the client leaves before the body is complete.
    """
    taken = 0
    if content_length is not None:
        if content_length > limit:
            raise PayloadTooLarge(f"body of {content_length} bytes exceeds the limit of {limit}")
        taken = content_length
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


async def serve(coalescer: Coalescer, route: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one pipeline request that came in as ASGI: once its body is read, it joins the worker's turn
    (:class:`~server.pipeline.coalesce.Coalescer`) with the requests of the other doors."""
    started = time.perf_counter()
    pipeline = coalescer.pipeline
    state = pipeline.state
    try:
        head = RequestHead.scan(scope["headers"])
        length = pipeline.check_head(route, head)
        body = await read_body(receive, length, state.settings.max_body_bytes, state.body_budget)
        version = pipeline.version_named(scope["path"].encode())
        request = AwaitedRequest(started, route, body, scope["query_string"], head.header_length, version)
        state.body_budget.hold(len(body))  # in memory until answered, as on the other doors; handed back then
        request.reserved = len(body)  # ... and the turn's share of batch work counts it
        request.trace_context = head.trace_context()
        answer = await coalescer.answer(request)
    except ApiError as exc:
        answer = pipeline.refuse(route, exc, started)
    except ClientDisconnected:
        return
    await send_answer(send, answer, state.draining)


def answer_response(answer: Answer) -> Response:
    """The pipeline's ``answer`` as a Starlette response, for a handler or an error handler."""
    headers = {k.decode(): v.decode() for k, v in answer.extra_headers()}
    return Response(answer.body, answer.status, headers, media_type=answer.content_type.decode())


async def send_answer(send: Send, answer: Answer, close: bool) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers(close)})
    await send({"type": "http.response.body", "body": answer.body})
