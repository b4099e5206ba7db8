"""``create_app(settings)``: the ASGI application, its lifespan and its error handler.

``POST /predict`` and V2 infer go straight to the pipeline's ASGI door (``server.http.asgi``): no Request/Response
objects, no routing, no middleware stack. Everything else (health, readiness, metadata, metrics, docs, the rest of
the V2 protocol, admin, 404/405) goes through an ordinary Starlette application built from the route table in
``server.http.routes``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from common.model.loader import Model, ModelError, load_model
from server.config.keys import KeyRing
from server.config.settings import Settings
from server.core.access import PROBES, counts_in_flight
from server.core.errors import CLIENT_CLOSED, INTERNAL_ERROR_BODY, ApiError, ClientDisconnected
from server.http import asgi
from server.http.asgi import CLOSE_HEADER, JSON_HEADER
from server.http.documents import serve_model
from server.http.routes import ROUTE_PATHS, build_routes, key_scope
from server.monitoring.drift import DRAIN_SECONDS
from server.monitoring.log_file import Rotation
from server.monitoring.metrics import METRICS_KEY, Metrics
from server.monitoring.request_log import RequestLog
from server.monitoring.shadow import load_shadow
from server.monitoring.tracing import TraceConfig, Tracer
from server.ops.control import SHADOW_CONTROL_FILE, read_control
from server.ops.shutdown import DrainOnSignal
from server.ops.swap import ModelSwapper
from server.pipeline.answer import OVERLOADED, error_answer
from server.pipeline.coalesce import COALESCER_KEY, DRAIN_KEY, Coalescer
from server.pipeline.head import RequestHead
from server.pipeline.pipeline import Pipeline
from server.pipeline.state import ServerState

if TYPE_CHECKING:
    from server.grpc.door import GrpcDoor

logger = logging.getLogger(__name__)

UNMATCHED_ROUTE = "other"  # the metrics label of paths no route matches: a bounded label set whatever clients send


async def render_error(request: Request, exc: Exception) -> Response:
    """The one error handler: our ``ApiError`` family, Starlette's 404/405, and anything unexpected as a JSON 500."""
    if isinstance(exc, ApiError):
        return asgi.answer_response(error_answer(exc))
    if isinstance(exc, HTTPException):
        body = orjson.dumps({"detail": exc.detail})
        return Response(body, exc.status_code, exc.headers, media_type="application/json")
    if isinstance(exc, ClientDisconnected):
        return Response(b"", CLIENT_CLOSED)
    return Response(INTERNAL_ERROR_BODY, 500, media_type="application/json")


async def _metrics_tick(metrics: Metrics, flush_seconds: float, swapper: ModelSwapper) -> None:
    """Count the rows queued for live drift every ``DRAIN_SECONDS``, follow model swaps asked of every worker, and
    write this worker's snapshot for the other workers' scrapes every ``flush_seconds`` (with a metrics folder).
    An error in one step is logged and the tick goes on: a worker that stopped following swaps would serve the old
    model for good."""
    last_flush = 0.0
    while True:
        try:
            if metrics.drift is not None:
                metrics.drift.drain()
            swapper.poll_control()
            if time.monotonic() - last_flush >= flush_seconds:
                metrics.flush()
                last_flush = time.monotonic()
        except Exception:
            logger.exception("metrics tick failed; it runs again in %.1fs", DRAIN_SECONDS)
        await asyncio.sleep(min(DRAIN_SECONDS, flush_seconds))


class PulseApp:
    """The outer ASGI callable: the pipeline's routes (``/predict``, V2 infer) to its door, the rest to Starlette."""

    def __init__(self, settings: Settings, model: Model | None = None) -> None:
        self.state = ServerState(
            settings, Metrics(settings.metrics_dir, settings.drift_min_rows, settings.estimate_tolerance)
        )
        self.pipeline = Pipeline(self.state)
        self._preloaded = model
        self._grpc_door: GrpcDoor | None = None  # PULSE_GRPC_PORT's, once the lifespan has started it
        self.coalescer = Coalescer(self.pipeline)  # the worker's queue of pipeline requests, for every door
        self.starlette = Starlette(
            routes=build_routes(self.state),
            lifespan=self._lifespan,
            exception_handlers={ApiError: render_error, HTTPException: render_error, Exception: render_error},
        )
        # No redirect from /path/ to /path: Starlette builds its Location from the client's Host header.
        self.starlette.router.redirect_slashes = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        path = scope["path"]
        if scope["method"] == "GET" and path.encode() in PROBES:  # answered before anything else
            answer = self.pipeline.probe(path.encode(), time.perf_counter())
            await asgi.send_answer(send, answer, self.state.draining)
            return
        # PULSE_MAX_IN_FLIGHT, from here to the answer, for the traffic (server.core.access). In fast mode the
        # requests the connection answers itself never reach the app: it admits them, by the same rule.
        counted = counts_in_flight(path)
        admission = self.state.admission
        if counted and not admission.admit():
            await asgi.send_answer(send, OVERLOADED, self.state.draining)
            return
        try:
            if self.state.keys is not None and not await self._authorized(scope, send):
                return
            route = self.pipeline.route_of(scope["method"].encode(), scope["path"].encode())
            if route is not None:
                await asgi.serve(self.coalescer, route, scope, receive, send)
            else:
                await self._counted(scope, receive, send)
        finally:
            if counted:
                admission.release()

    async def _authorized(self, scope: Scope, send: Send) -> bool:
        """With API keys on: whether the request's key has the scope its route needs; if not, answer 401/403."""
        path = scope["path"]
        error = self.pipeline.authorize(key_scope(path), path, RequestHead.scan(scope["headers"]))
        if error is None:
            return True
        answer = error_answer(error, v2=path.startswith("/v2/"))
        self.state.metrics.observe_request(path if path in ROUTE_PATHS else UNMATCHED_ROUTE, answer.status, 0.0)
        await asgi.send_answer(send, answer, self.state.draining)
        return False

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Starlette's answer, counted in the metrics under the matched route's path."""
        started = time.perf_counter()
        state, metrics = self.state, self.state.metrics
        status = 500
        response_started = False

        async def send_with_status(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                if state.draining:
                    message["headers"] = [*message.get("headers", []), CLOSE_HEADER]
            await send(message)

        try:
            await self.starlette(scope, receive, send_with_status)
        except ClientDisconnected:
            status = CLIENT_CLOSED
        except Exception:
            logger.exception("unexpected error path=%s", scope["path"])
            if not response_started:  # pragma: no cover - the Exception handler has answered already
                await send_with_status({"type": "http.response.start", "status": 500, "headers": [JSON_HEADER]})
                await send({"type": "http.response.body", "body": INTERNAL_ERROR_BODY})
        finally:
            if status != CLIENT_CLOSED:
                route = scope.get("route")
                label = route.path if route is not None else UNMATCHED_ROUTE
                metrics.observe_request(label, status, time.perf_counter() - started)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[dict[str, object]]:
        state, settings = self.state, self.state.settings
        started = time.perf_counter()
        model, generation = self._initial_model()
        # Always there (an idle thread costs nothing): an admin may set a shadow at any time.
        rotation = Rotation(
            settings.request_log_max_bytes, settings.request_log_max_age_seconds, settings.request_log_keep
        )
        request_log = RequestLog(
            settings.request_log, settings.request_log_sample, settings.request_log_queue, rotation
        )
        if settings.shadow_model is not None and read_control(settings.metrics_dir, SHADOW_CONTROL_FILE) is None:
            # The configured shadow, unless an admin has set or removed one since (the tick follows that record).
            try:  # a shadow never takes a worker down: a restarted worker must not crash-loop on a file now gone
                request_log.shadow = load_shadow(
                    settings.shadow_model, "", model, settings.shadow_sample, settings.max_model_bytes
                )
            except ModelError as exc:
                logger.error("configured shadow model not loaded; serving without it: %s", exc)
        request_log.start()
        state.request_log = state.metrics.request_log = request_log
        metrics = state.metrics
        trace_config = TraceConfig.from_env()
        if trace_config is not None:  # OpenTelemetry, configured by OTEL_* variables: this worker's own exporter
            grpc_sender = None
            if trace_config.exporter == "otlp" and trace_config.protocol == "grpc":
                from server.grpc.otlp import GrpcSender  # grpc is imported only when it is asked for

                grpc_sender = GrpcSender(trace_config)
            state.tracer = Tracer(trace_config, grpc_sender)
            state.tracer.start()
            metrics.trace_counters = state.tracer.counters
        metrics.ready = lambda: state.ready
        drain = DrainOnSignal(settings.drain_seconds, self._begin_drain)
        if settings.http == "stock":  # uvicorn owns the signals there; our own listener drains on its own
            drain.install()
        if settings.api_keys_file is not None:
            state.keys = KeyRing.load(settings.api_keys_file)
        state.serve(serve_model(model, settings, request_log))
        state.swapper = swapper = ModelSwapper(state, lambda new: serve_model(new, settings, request_log), generation)
        reloads = _on_sighup(swapper.on_sighup)
        flusher = asyncio.create_task(_metrics_tick(metrics, settings.metrics_flush_seconds, swapper))
        coalescer = self.coalescer
        if settings.grpc_port is not None:
            from server.grpc.door import GrpcDoor  # grpc is imported only when its port is asked for

            self._grpc_door = GrpcDoor(self.pipeline, coalescer)
            await self._grpc_door.start()
        logger.info("ready in %.3fs model=%s", time.perf_counter() - started, settings.model_path)
        try:
            # Lifespan state, read by each connection (server.http.fast.protocol): where it counts its refusals,
            # and where it hands small /predict requests to be scored together.
            connection_state: dict[str, object] = {METRICS_KEY: metrics}
            if settings.http == "fast":
                connection_state[COALESCER_KEY] = coalescer
                connection_state[DRAIN_KEY] = self._begin_drain
            yield connection_state
        finally:
            state.draining = True
            if self._grpc_door is not None:  # stopping since the drain began, if one did: bounded by the same budget
                await self._grpc_door.stop()
            flusher.cancel()
            drain.restore()
            reloads()
            request_log.close()
            if state.tracer is not None:
                state.tracer.shutdown()
            metrics.flush(in_flight=0)  # this worker's last figures stay in the sums after it exits
            logger.info("shutdown complete")

    def _initial_model(self) -> tuple[Model, int]:
        """The model to start on, and the control record's generation it is: with several workers, the one the
        cluster serves now (a worker the supervisor restarted after a swap must not bring the old one back);
        otherwise, or when that model can no longer be loaded, the configured one (generation 0)."""
        settings = self.state.settings
        control = read_control(settings.metrics_dir)
        if control is not None:
            try:
                model = load_model(control.path, control.sha256, settings.ort_threads, settings.max_model_bytes)
                return model, control.generation
            except ModelError as exc:
                logger.error("the cluster's model (generation %d) cannot be loaded: %s", control.generation, exc)
        model = self._preloaded or load_model(
            settings.model_path, settings.model_sha256, settings.ort_threads, settings.max_model_bytes
        )
        self._preloaded = None
        return model, 0

    def _begin_drain(self) -> None:
        self.state.draining = True
        if self._grpc_door is not None:
            self._grpc_door.drain()


def _on_sighup(handler: Callable[[], None]) -> Callable[[], None]:
    """Call ``handler`` on SIGHUP (from the main thread's event loop); returns what undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, handler)

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def create_app(settings: Settings, model: Model | None = None) -> PulseApp:
    """The application for ``settings``; it serves ``model`` if given (already loaded), else loads it at start-up."""
    return PulseApp(settings, model)
