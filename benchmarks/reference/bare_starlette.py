"""The framework's ceiling: a Starlette route that parses the JSON with orjson and returns a constant."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.reference._run import serve

CONSTANT = b'{"churn_probability":0.5,"churn":true,"threshold":0.5,"model_version":"constant"}'


async def predict(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(CONSTANT, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])

if __name__ == "__main__":
    serve(app)
