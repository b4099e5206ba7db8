"""The gRPC door onto the pipeline: the Open Inference Protocol's ``inference.GRPCInferenceService`` on
``PULSE_GRPC_PORT``, in each worker's event loop beside HTTP.

``ModelInfer`` hands the serialized request to :meth:`Pipeline.answer` as it is (the pipeline parses, validates,
scores, explains, logs, counts and feeds drift, exactly as for HTTP) and sends back the bytes it answers; an error
answer becomes the gRPC status its HTTP status means, with the same message. The other calls answer from the
served model as the HTTP routes do. API keys come as the ``authorization`` metadata; ``PULSE_MAX_IN_FLIGHT`` sheds
as on HTTP; the message size limit is ``PULSE_MAX_BODY_BYTES``. With N workers, each listens on the port
(SO_REUSEPORT) and the kernel spreads connections over them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson

from server.core.errors import V2Error
from server.core.limits import GATED_BODY_BYTES
from server.core.v2 import SERVER_METADATA, model_config, model_metadata, served_or_error
from server.core.v2_grpc import INFER_ROUTE, SERVICE, from_dict, message_class
from server.pipeline.answer import Answer, error_answer
from server.pipeline.head import RequestHead
from server.pipeline.pipeline import Pipeline, Request

logger = logging.getLogger(__name__)

# The gRPC status of each HTTP status the pipeline answers (the rest of 4xx: INVALID_ARGUMENT).
STATUS_CODES = {
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
OVERLOADED = "too many requests in flight; retry shortly"
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class GrpcDoor:
    """One worker's gRPC server over its pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.state = pipeline.state
        self.model_name = self.state.settings.model_name
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        settings = self.state.settings
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 1),
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
            ]
        )
        server.add_generic_rpc_handlers((self._handlers(),))
        address = f"{settings.host}:{settings.grpc_port}"
        if settings.tls_cert is not None and settings.tls_key is not None:
            credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
            server.add_secure_port(address, credentials)
        else:
            server.add_insecure_port(address)
        await server.start()
        self.server = server
        logger.info("gRPC %s on %s", SERVICE, address)

    async def stop(self, grace: float) -> None:
        if self.server is not None:
            await self.server.stop(grace)

    def _handlers(self) -> grpc.GenericRpcHandler:
        def typed(name: str, handler: Handler, scope: str | None) -> grpc.RpcMethodHandler:
            request, response = message_class(f"{name}Request"), message_class(f"{name}Response")
            return grpc.unary_unary_rpc_method_handler(
                self._guarded(f"/{SERVICE}/{name}", handler, scope),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": typed("ServerLive", self._live, None),
                "ServerReady": typed("ServerReady", self._ready, None),
                "ServerMetadata": typed("ServerMetadata", self._server_metadata, None),
                "ModelReady": typed("ModelReady", self._model_ready, "predict"),
                "ModelMetadata": typed("ModelMetadata", self._model_metadata, "predict"),
                "ModelConfig": typed("ModelConfig", self._model_config, "predict"),
                # Bytes in, bytes out: the pipeline reads and writes the messages.
                "ModelInfer": grpc.unary_unary_rpc_method_handler(self._infer),
            },
        )

    def _refusal(self, route: str, needed: str | None, context: grpc.aio.ServicerContext) -> V2Error | None:
        """The key check and the in-flight limit, as the HTTP doors apply them (probes are neither shed nor keyed)."""
        if needed is None:
            return None
        if self.state.keys is not None:
            headers = [(key.encode(), str(value).encode()) for key, value in context.invocation_metadata() or ()]
            error = self.pipeline.authorize(needed, route, RequestHead.scan(headers))
            if error is not None:
                return V2Error.of(error)
        return V2Error(OVERLOADED, 503) if self.pipeline.overloaded() else None

    def _guarded(self, route: str, handler: Handler, needed: str | None) -> Handler:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            metrics = self.state.metrics
            error = self._refusal(route, needed, context)
            status = 200
            metrics.in_flight += 1
            try:
                if error is not None:
                    raise error
                return await handler(request, context)
            except V2Error as exc:
                status = exc.status_code
                await _abort(context, error_answer(exc, v2=True))
            except Exception:
                status = 500
                raise
            finally:
                metrics.in_flight -= 1
                metrics.observe_request(route, status, time.perf_counter() - started)

        return call

    async def _infer(self, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        state, pipeline = self.state, self.pipeline
        error = self._refusal(INFER_ROUTE, "predict", context)
        if error is not None:
            await _abort(context, pipeline.refuse(INFER_ROUTE, error, started))
        state.metrics.in_flight += 1
        try:
            request = Request(INFER_ROUTE, b"", body, started)
            if len(body) > GATED_BODY_BYTES:  # as on HTTP: large batches take turns, probes go between them
                async with state.batch_gate:
                    (answer,) = pipeline.answer([request])
            else:
                (answer,) = pipeline.answer([request])
        finally:
            state.metrics.in_flight -= 1
        if answer.status != 200:
            await _abort(context, answer)
        return answer.body

    async def _live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return from_dict("ServerLiveResponse", {"live": True})

    async def _ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return from_dict("ServerReadyResponse", {"ready": self.state.ready})

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


async def _abort(context: grpc.aio.ServicerContext, answer: Answer) -> None:
    """End the call with the gRPC status the answer's HTTP status means, and its message."""
    code = STATUS_CODES.get(answer.status, grpc.StatusCode.INVALID_ARGUMENT)
    document = orjson.loads(answer.body)  # {"error": ...}, or the plain 500's {"detail": ...}
    await context.abort(code, str(document.get("error") or document.get("detail")))
