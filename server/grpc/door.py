"""The gRPC door onto the pipeline: the Open Inference Protocol's ``inference.GRPCInferenceService`` on
``PULSE_GRPC_PORT``, in each worker's event loop beside HTTP, with the standard health and reflection services.

``ModelInfer`` is held to the rules HTTP requests are held to, by the same objects: the worker's
:class:`~server.core.limits.Admission` (``PULSE_MAX_IN_FLIGHT``, counted over every door, held from the call's start
to its answer: one too many is ``RESOURCE_EXHAUSTED`` at once, before its message is decoded), the body budget
(``PULSE_MAX_PENDING_BODY_BYTES``), the keys. Its message then joins the worker's coalescer
(:mod:`server.pipeline.coalesce`): the calls of an event-loop turn, with the HTTP requests of that turn, go to the
pipeline together, which parses, validates, scores, explains, logs, counts and feeds drift exactly as for HTTP and
hands back the serialized answer. While the worker drains, new calls get ``UNAVAILABLE`` and the health service
says ``NOT_SERVING``.

Errors are statuses a gRPC client branches on, never a traceback: ``INVALID_ARGUMENT`` for a bad request,
``RESOURCE_EXHAUSTED`` for one too large or one too many, ``UNAVAILABLE`` while not ready or draining,
``INTERNAL`` with a generic message (the cause goes to the log). With N workers, each listens on the port
(SO_REUSEPORT) and the kernel spreads connections over them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from server.config.settings import Settings
from server.core.access import counts_in_flight, needed_scope
from server.core.errors import ApiError, InternalError, NotReady, Overloaded, V2Error
from server.core.v2 import SERVER_METADATA, model_config, model_metadata, served_or_error
from server.core.v2_grpc import INFER_ROUTE, SERVICE, from_dict, grpc_status, message_class
from server.grpc.services import StandardServices
from server.pipeline.answer import Answer, error_answer
from server.pipeline.coalesce import AwaitedRequest, Coalescer
from server.pipeline.head import RequestHead
from server.pipeline.pipeline import Pipeline, TraceContext
from server.pipeline.probes import probe_document

logger = logging.getLogger(__name__)

STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}  # grpc_status()'s numbers, as grpc's enum
SHED = Overloaded("too many requests in flight; retry shortly")
DRAINING = NotReady("this worker is shutting down; retry on another")

# Keepalive enforcement: a client may ping at most once per MIN_PING_INTERVAL_MS (without calls in flight too);
# more often, twice, and the connection gets GOAWAY (too_many_pings): a ping flood costs the worker nothing.
MIN_PING_INTERVAL_MS = 10_000
MAX_PING_STRIKES = 2

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server's channel arguments: each bound the door promises, from the settings."""
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.max_metadata_size", settings.max_header_bytes),
        ("grpc.max_concurrent_streams", settings.grpc_max_streams),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", MAX_PING_STRIKES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_idle_ms", int(settings.grpc_max_connection_idle_seconds * 1000)),
        ("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", settings.graceful_timeout_seconds * 1000),
    ]


class GrpcDoor:
    """One worker's gRPC server over its pipeline."""

    def __init__(self, pipeline: Pipeline, coalescer: Coalescer) -> None:
        self.pipeline = pipeline
        self.coalescer = coalescer
        self.state = pipeline.state
        self.model_name = self.state.settings.model_name
        self.server: grpc.aio.Server | None = None
        self.services = StandardServices(SERVICE)
        self._stopping: asyncio.Task[None] | None = None
        self._reported: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.state.settings
        server = grpc.aio.server(
            options=server_options(settings), maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        self.services.add_to(server, reflection_on=settings.grpc_reflection)
        address = f"{settings.host}:{settings.grpc_port}"
        if settings.tls_cert is not None and settings.tls_key is not None:
            credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
            server.add_secure_port(address, credentials)
        else:
            server.add_insecure_port(address)
        await server.start()
        self.server = server
        await self.services.serving(self.state.ready)
        logger.info("gRPC %s on %s", SERVICE, address)

    def drain(self) -> None:
        """The worker begins to drain: NOT_SERVING from now on (new calls already get UNAVAILABLE), and after the
        drain period the server stops, giving the calls under way the graceful period, as HTTP does."""
        settings = self.state.settings
        loop = asyncio.get_running_loop()
        self._reported = loop.create_task(self.services.shutting_down())  # kept: the loop holds tasks weakly
        if self._stopping is None:
            self._stopping = loop.create_task(self._stop_after(settings.drain_seconds))

    async def stop(self) -> None:
        """Stop now (or finish the stop a drain began): the worker is shutting down."""
        if self._stopping is None:
            await self.services.shutting_down()
            self._stopping = asyncio.create_task(self._stop_after(0.0))
        await self._stopping

    async def _stop_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.server is not None:
            await self.server.stop(self.state.settings.graceful_timeout_seconds)

    # ModelInfer: bytes in, bytes out (the pipeline reads and writes the messages) ------------------------------
    async def _infer(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        state = self.state
        refusal = self._refusal(INFER_ROUTE, context)
        if refusal is not None:
            await _abort(context, self.pipeline.refuse(INFER_ROUTE, refusal, started))
        call = AwaitedRequest(started, INFER_ROUTE, body)
        call.admitted = True
        try:
            state.body_budget.take(len(body))  # the HTTP bodies' budget, and its refusal (counted there)
        except Overloaded as exc:
            self.coalescer.release(call)
            await _abort(context, self.pipeline.refuse(INFER_ROUTE, exc, started))
        call.reserved = len(body)
        if state.tracer is not None:  # W3C Trace Context travels as metadata (gRPC's headers)
            call.trace_context = _trace_context(context)
        answer = await self.coalescer.answer(call)  # a client gone meanwhile: its turn skips it
        if answer.status != 200:
            await _abort(context, answer)
        return answer.body

    def _refusal(self, route: str, context: grpc.aio.ServicerContext) -> ApiError | None:
        """Why a call is refused before its message is read: the worker is draining, its key does not grant what
        the route needs, or it is one too many in flight (else it now holds its place, for the traffic:
        :mod:`server.core.access`). The open methods (the probes, the server's metadata) are none of these."""
        needed = needed_scope(route)
        if needed is None:
            return None
        state = self.state
        if state.draining:
            state.metrics.rejected[("draining", 503)] += 1
            return DRAINING
        if state.keys is not None:
            headers = [(key.encode(), str(value).encode()) for key, value in context.invocation_metadata() or ()]
            error = self.pipeline.authorize(needed, route, RequestHead.scan(headers))
            if error is not None:
                return V2Error.of(error)
        return SHED if counts_in_flight(route) and not state.admission.admit() else None

    # The other calls: answered from the served model, as the HTTP routes are -----------------------------------
    def _handlers(self) -> grpc.GenericRpcHandler:
        def typed(name: str, handler: Handler) -> grpc.RpcMethodHandler:
            request, response = message_class(f"{name}Request"), message_class(f"{name}Response")
            return grpc.unary_unary_rpc_method_handler(
                self._guarded(f"/{SERVICE}/{name}", handler),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": typed("ServerLive", self._live),
                "ServerReady": typed("ServerReady", self._ready),
                "ServerMetadata": typed("ServerMetadata", self._server_metadata),
                "ModelReady": typed("ModelReady", self._model_ready),
                "ModelMetadata": typed("ModelMetadata", self._model_metadata),
                "ModelConfig": typed("ModelConfig", self._model_config),
                "ModelInfer": grpc.unary_unary_rpc_method_handler(self._infer),
            },
        )

    def _guarded(self, route: str, handler: Handler) -> Handler:
        admitted = counts_in_flight(route)

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            refusal = self._refusal(route, context)
            if refusal is not None:
                await _abort(context, self.pipeline.refuse(route, refusal, started))
            status = 200
            try:
                return await handler(request, context)
            except V2Error as exc:
                status = exc.status_code
                await _abort(context, error_answer(exc, v2=True))
            except Exception:  # never a traceback for the client: a generic INTERNAL, the cause in the log
                status = 500
                logger.exception("unexpected error answering %s", route)
                await _abort(context, error_answer(InternalError(), v2=True))
            finally:
                if admitted:
                    self.state.admission.release()
                self.state.metrics.observe_request(route, status, time.perf_counter() - started)

        return call

    async def _live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return from_dict("ServerLiveResponse", probe_document(self.state, b"/v2/health/live")[1])

    async def _ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return from_dict("ServerReadyResponse", probe_document(self.state, b"/v2/health/ready")[1])

    async def _server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return from_dict("ServerMetadataResponse", SERVER_METADATA)

    async def _model_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        served_or_error(self.state.served, self.model_name, request.name, request.version)
        return from_dict("ModelReadyResponse", {"ready": self.state.ready})

    async def _model_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        served = served_or_error(self.state.served, self.model_name, request.name, request.version)
        return from_dict("ModelMetadataResponse", model_metadata(self.model_name, served.info, served.model.n_classes))

    async def _model_config(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        served = served_or_error(self.state.served, self.model_name, request.name, request.version)
        document = {"config": model_config(self.model_name, served.info, served.model.n_classes)}
        return from_dict("ModelConfigResponse", document)


def _trace_context(context: grpc.aio.ServicerContext) -> TraceContext | None:
    """The call's W3C Trace Context, from its metadata (gRPC's headers)."""
    found: dict[str, bytes] = {}
    for key, value in context.invocation_metadata() or ():
        if key in ("traceparent", "tracestate"):
            found[key] = value.encode("latin-1") if isinstance(value, str) else value
    parent = found.get("traceparent")
    return None if parent is None else (parent, found.get("tracestate"))


async def _abort(context: grpc.aio.ServicerContext, answer: Answer) -> None:
    """End the call with the gRPC status the error answer's HTTP status means (overload refusals:
    RESOURCE_EXHAUSTED), and its message."""
    error = answer.error if answer.error is not None else InternalError()  # every error answer carries its error
    await context.abort(STATUS_CODES[grpc_status(answer.status, isinstance(error, Overloaded))], str(error))
