"""``create_app(settings)``: the ASGI application.

``POST /predict`` is the product's hot path, so an outer ASGI callable hands it straight to a lean handler:
no Request/Response objects, no routing, no middleware stack. Everything else (health, readiness, metadata,
metrics, docs, the V2 protocol, 404/405) goes through an ordinary Starlette application.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
import swagger_ui_bundle
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from server import v2
from server.errors import ApiError, NotReady, PayloadTooLarge, UnsupportedMediaType
from server.metrics import Metrics
from server.model import Model, load_model
from server.openapi import DOCS_HTML, build_openapi
from server.request_log import RequestLog
from server.settings import Settings
from server.shutdown import DrainOnSigterm
from server.validation import RowParser, decode_json

logger = logging.getLogger(__name__)

NUMPY = orjson.OPT_SERIALIZE_NUMPY
JSON_HEADER = (b"content-type", b"application/json")
CLOSE_HEADER = (b"connection", b"close")
INTERNAL_ERROR = b'{"detail":"Internal Server Error"}'
_ROUTES = frozenset(
    {
        "/health",
        "/ready",
        "/metadata",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
    }
)


class ClientDisconnected(Exception):
    """The client went away before sending its whole body."""


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=NUMPY)


def _is_json(content_type: bytes) -> bool:
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    if content_length is not None:
        if not content_length.isdigit():
            raise ApiError("Content-Length is not a number")
        if int(content_length) > limit:
            raise PayloadTooLarge(f"body of {int(content_length)} bytes exceeds the limit of {limit}")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and message["type"] == "http.request":
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
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    return b"".join(chunks)


def _route_label(path: str) -> str:
    """A bounded set of labels for metrics, whatever paths clients send."""
    if path in _ROUTES:
        return path
    if path.startswith("/v2/models/"):
        return "/v2/models/{name}" + next((s for s in ("/infer", "/ready") if path.endswith(s)), "")
    if path.startswith("/docs/"):
        return "/docs/assets"
    return "other"


class Runtime:
    """Everything the hot path needs, prepared once when the model loads."""

    def __init__(self, model: Model, settings: Settings, request_log: RequestLog | None) -> None:
        info = model.info
        self.model = model
        self.info = info
        self.parser = RowParser(info.features, info.minimums, settings.max_batch)
        self.threshold = info.threshold
        self.version = info.version
        self.request_log = request_log
        constant = orjson.dumps({"threshold": info.threshold, "model_version": info.version})[1:]
        self._churned_tail = b',"churn":true,' + constant
        self._stayed_tail = b',"churn":false,' + constant
        self.openapi = orjson.dumps(build_openapi(info, settings))
        self.metadata = orjson.dumps(
            {
                "model_version": info.version,
                "trained_at": info.trained_at,
                "features": list(info.features),
                "threshold": info.threshold,
                "threshold_rule": "churn = churn_probability >= threshold",
                "metrics": info.test_metrics,
                "sha256": info.sha256,
                "size_bytes": info.size_bytes,
                "node_count": info.node_count,
                "input_name": info.input_name,
                "limits": {"max_batch": settings.max_batch, "max_body_bytes": settings.max_body_bytes},
            }
        )

    def render_one(self, p: Any) -> bytes:
        return orjson.dumps(
            {
                "churn_probability": p,
                "churn": p >= self.threshold,
                "threshold": self.threshold,
                "model_version": self.version,
            },
            option=NUMPY,
        )

    def render_batch(self, proba: Any) -> bytes:
        # Same JSON as one dict per row, built from bytes: orjson formats the probabilities in one C call.
        numbers = orjson.dumps(proba, option=NUMPY)[1:-1].split(b",")
        churned, stayed = self._churned_tail, self._stayed_tail
        rows = [
            b'{"churn_probability":' + number + (churned if churn else stayed)
            for number, churn in zip(numbers, (proba >= self.threshold).tolist(), strict=True)
        ]
        return b"[" + b",".join(rows) + b"]"


class PulseApp:
    """The outer ASGI callable: ``POST /predict`` to the lean handler, everything else to Starlette."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.runtime: Runtime | None = None
        self.draining = False
        self.starlette = self._build_starlette()

    @property
    def ready(self) -> bool:
        return self.runtime is not None and not self.draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST":
            await self._predict(scope, receive, send)
        elif scope["type"] == "http":
            await self._other(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)

    # The hot path ------------------------------------------------------------------------------------------
    async def _predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight += 1
        status = 200
        try:
            runtime = self.runtime
            if runtime is None:
                raise NotReady("model not loaded yet")
            content_type = b""
            content_length = None
            for name, value in scope["headers"]:
                if name == b"content-type":
                    content_type = value
                elif name == b"content-length":
                    content_length = value
            if content_type != b"application/json" and not _is_json(content_type):
                raise UnsupportedMediaType("Content-Type must be application/json")
            body = await read_body(receive, content_length, self.settings.max_body_bytes)
            rows = runtime.parser.parse(body)
            compute_started = time.perf_counter()
            if isinstance(rows, list):
                p = runtime.model.predict_one(rows)
                metrics.observe_compute(time.perf_counter() - compute_started, 1)
                payload = runtime.render_one(p)
                if runtime.request_log is not None:
                    runtime.request_log.submit(np.array([rows], dtype=np.float32), np.array([p]))
            else:
                proba = runtime.model.predict_proba(rows)
                metrics.observe_compute(time.perf_counter() - compute_started, len(rows))
                payload = runtime.render_batch(proba)
                if runtime.request_log is not None:
                    runtime.request_log.submit(rows, proba)
        except ApiError as exc:
            status = exc.status_code
            payload = orjson.dumps({"detail": exc.detail})
        except ClientDisconnected:
            metrics.in_flight -= 1
            return
        except Exception:
            logger.exception("unexpected error in /predict")
            status = 500
            payload = INTERNAL_ERROR
        headers = [JSON_HEADER, (b"content-length", str(len(payload)).encode())]
        if self.draining:
            headers.append(CLOSE_HEADER)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:
            metrics.in_flight -= 1
            metrics.observe_request("/predict", status, time.perf_counter() - started)

    # Everything else ---------------------------------------------------------------------------------------
    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_status(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                if self.draining:
                    message["headers"] = [*message.get("headers", []), CLOSE_HEADER]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.starlette(scope, receive, send_with_status)
        except Exception:
            logger.exception("unexpected error path=%s", scope["path"])
            if not response_started:
                await send_with_status({"type": "http.response.start", "status": 500, "headers": [JSON_HEADER]})
                await send({"type": "http.response.body", "body": INTERNAL_ERROR})
        finally:
            self.metrics.in_flight -= 1
            self.metrics.observe_request(_route_label(scope["path"]), status, time.perf_counter() - started)

    def _build_starlette(self) -> Starlette:
        routes = [
            Route("/predict", self._predict_route, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready_route, methods=["GET"]),
            Route("/metadata", self.metadata_route, methods=["GET"]),
            Route("/metrics", self.metrics_route, methods=["GET"]),
            Route("/openapi.json", self.openapi_route, methods=["GET"]),
            Route("/docs", self.docs, methods=["GET"]),
            Mount("/docs/assets", StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="docs-assets"),
            Route("/v2", self.v2_server, methods=["GET"]),
            Route("/v2/health/live", self.v2_live, methods=["GET"]),
            Route("/v2/health/ready", self.v2_ready, methods=["GET"]),
            Route("/v2/models/{model_name}", self.v2_model, methods=["GET"]),
            Route("/v2/models/{model_name}/ready", self.v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model_name}/infer", self.v2_infer, methods=["POST"]),
        ]
        return Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={ApiError: self._api_error, HTTPException: self._http_error, v2.V2Error: self._v2_error},
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        settings = self.settings
        started = time.perf_counter()
        model = load_model(settings.model_path, settings.model_sha256, settings.ort_threads)
        request_log = None
        if settings.request_log is not None:
            request_log = RequestLog(
                settings.request_log,
                model.info.features,
                model.info.version,
                settings.request_log_sample,
                settings.request_log_queue,
            )
            request_log.start()
            self.metrics.log_counters = request_log.counters
        self.metrics.info = {"version": model.info.version, "sha256": model.info.sha256}
        drain = DrainOnSigterm(settings.drain_seconds, self._begin_drain)
        drain.install()
        self.runtime = Runtime(model, settings, request_log)
        logger.info("ready in %.3fs model=%s", time.perf_counter() - started, settings.model_path)
        try:
            yield
        finally:
            self.draining = True
            drain.restore()
            if request_log is not None:
                request_log.close()

    def _begin_drain(self) -> None:
        self.draining = True

    # Handlers ----------------------------------------------------------------------------------------------
    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise NotReady("model not loaded yet")
        return self.runtime

    async def _predict_route(self, request: Request) -> Response:  # pragma: no cover
        # Never reached: the outer callable answers POST /predict. The route exists so other methods get a 405.
        raise HTTPException(500)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready_route(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "model_version": self._runtime().version})
        return JSONResponse({"status": "draining" if self.draining else "loading"}, status_code=503)

    async def metadata_route(self, request: Request) -> Response:
        return Response(self._runtime().metadata, media_type="application/json")

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi_route(self, request: Request) -> Response:
        return Response(self._runtime().openapi, media_type="application/json")

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    async def v2_server(self, request: Request) -> Response:
        return JSONResponse({"name": "ml-pulsechecker", "version": "1", "extensions": []})

    async def v2_live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    def _v2_runtime(self, request: Request) -> Runtime:
        name = request.path_params["model_name"]
        if name != self.settings.model_name:
            raise v2.V2Error(f"model {name!r} not found; this server serves {self.settings.model_name!r}", 404)
        if self.runtime is None:
            raise v2.V2Error("model not loaded yet", 503)
        return self.runtime

    async def v2_model(self, request: Request) -> Response:
        runtime = self._v2_runtime(request)
        return JSONResponse(v2.model_metadata(self.settings.model_name, runtime.info, runtime.model.n_classes))

    async def v2_model_ready(self, request: Request) -> Response:
        self._v2_runtime(request)
        return JSONResponse(
            {"name": self.settings.model_name, "ready": self.ready}, status_code=200 if self.ready else 503
        )

    async def v2_infer(self, request: Request) -> Response:
        runtime = self._v2_runtime(request)
        header_length = request.headers.get("inference-header-content-length")
        content_type = request.headers.get("content-type", "").encode()
        if not _is_json(content_type) and not (header_length and content_type.startswith(b"application/octet-stream")):
            raise v2.V2Error(
                "Content-Type must be application/json (or application/octet-stream with the binary tensor extension)",
                415,
            )
        try:
            body = await read_body(
                request.receive,
                request.headers.get("content-length", "").encode() or None,
                self.settings.max_body_bytes,
            )
            binary = None
            if header_length is not None:
                body, binary = v2.split_binary_body(body, header_length)
            data = decode_json(body)
        except ApiError as exc:
            raise v2.V2Error(str(exc.detail), exc.status_code) from None
        X, request_id = v2.parse_infer_request(data, runtime.info, self.settings.max_batch, binary)
        started = time.perf_counter()
        probabilities = runtime.model.predict_all(X)
        self.metrics.observe_compute(time.perf_counter() - started, len(X))
        return JSONResponse(v2.infer_response(self.settings.model_name, runtime.info, probabilities, request_id))

    # Errors ------------------------------------------------------------------------------------------------
    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/v2"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def _v2_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, v2.V2Error)
        return JSONResponse({"error": str(exc)}, status_code=exc.status_code)


def create_app(settings: Settings) -> PulseApp:
    """The application for ``settings``; the model loads in its lifespan."""
    return PulseApp(settings)


def create_app_from_env() -> PulseApp:
    """Factory for uvicorn workers: each reads the same ``PULSE_*`` environment."""
    return create_app(Settings.from_env())
