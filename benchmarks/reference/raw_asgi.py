"""Python's ceiling: a raw ASGI callable that parses the JSON with orjson and returns a constant."""

from __future__ import annotations

from typing import Any

import orjson

from benchmarks.reference._run import serve

CONSTANT = b'{"churn_probability":0.5,"churn":true,"threshold":0.5,"model_version":"constant"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(CONSTANT)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        orjson.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": CONSTANT})


if __name__ == "__main__":
    serve(app)
