"""The route table: every endpoint once, with what OpenAPI says of it. Starlette's routes, the OpenAPI paths
and the metric labels (Starlette's matched ``scope["route"]``) all come from :data:`ENDPOINTS`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import swagger_ui_bundle
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from server.asgi import OrjsonResponse
from server.errors import V2Error
from server.state import ServerState
from server.v2 import V2Handlers

DOCS_ASSETS = "/docs/assets"
DOCS_HTML = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ML-PulseChecker API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null,
                                 deepLinking: true, tryItOutEnabled: true}});
  </script>
</body>
</html>
""".encode()


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response: its description and the schema of its body (a component name)."""

    description: str
    schema: str | None = None
    media_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    method: str
    name: str  # the handler's name and the OpenAPI operationId
    summary: str
    responses: dict[int, Reply] = field(default_factory=dict)
    request_schema: str | None = None  # component name of the JSON body
    v2: bool = False  # errors in the protocol's own body
    query: tuple[str, ...] = ()  # query parameters (OpenAPI describes each from the loaded model)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


_NOT_READY = Reply("Model not loaded yet", "Error")
_V2_ERROR = "V2Error"

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/predict",
        "POST",
        "predict",
        "Churn probability for one user, or for a batch of users",
        {
            200: Reply("One result per input object, in order", "PredictResponse"),
            400: Reply("Malformed JSON", "Error"),
            413: Reply("Body or batch too large", "Error"),
            415: Reply("Content-Type is not application/json", "Error"),
            422: Reply("Invalid fields, or an invalid `explain`", "ValidationError"),
            503: _NOT_READY,
        },
        request_schema="PredictRequest",
        query=("explain",),
    ),
    Endpoint("/health", "GET", "health", "Liveness", {200: Reply("Alive", "Health")}),
    Endpoint(
        "/ready",
        "GET",
        "ready",
        "Readiness: the model is loaded and verified, and the server is not draining",
        {200: Reply("Ready", "Readiness"), 503: Reply("Loading or draining", "Readiness")},
    ),
    Endpoint(
        "/metadata",
        "GET",
        "metadata",
        "The served model",
        {200: Reply("Version, features, threshold, metrics", "Metadata"), 503: _NOT_READY},
    ),
    Endpoint(
        "/metrics", "GET", "metrics", "Prometheus metrics", {200: Reply("Prometheus text format", None, "text/plain")}
    ),
    Endpoint(
        "/openapi.json", "GET", "openapi", "This document", {200: Reply("OpenAPI 3.0", "Object"), 503: _NOT_READY}
    ),
    Endpoint("/docs", "GET", "docs", "Swagger UI", {200: Reply("HTML page", None, "text/html")}),
    Endpoint("/v2", "GET", "v2_server", "V2 server metadata", {200: Reply("Server metadata", "Object")}, v2=True),
    Endpoint("/v2/health/live", "GET", "v2_live", "V2 liveness", {200: Reply("Live", "V2Live")}, v2=True),
    Endpoint(
        "/v2/health/ready",
        "GET",
        "v2_ready",
        "V2 readiness",
        {200: Reply("Ready", "V2Ready"), 503: Reply("Not ready", "V2Ready")},
        v2=True,
    ),
    Endpoint(
        "/v2/models/{model_name}",
        "GET",
        "v2_model",
        "V2 model metadata",
        {200: Reply("Metadata", "Object"), 404: Reply("Unknown model", _V2_ERROR), 503: Reply("Loading", _V2_ERROR)},
        v2=True,
    ),
    Endpoint(
        "/v2/models/{model_name}/ready",
        "GET",
        "v2_model_ready",
        "V2 model readiness",
        {
            200: Reply("Ready", "V2ModelReady"),
            404: Reply("Unknown model", _V2_ERROR),
            503: Reply("Loading or draining", "V2ModelReady"),
        },
        v2=True,
    ),
    Endpoint(
        "/v2/models/{model_name}/infer",
        "POST",
        "v2_infer",
        "Open Inference Protocol V2 inference",
        {
            200: Reply("The model's probability output", "V2Response"),
            400: Reply("Bad request", _V2_ERROR),
            404: Reply("Unknown model", _V2_ERROR),
            413: Reply("Body or batch too large", _V2_ERROR),
            415: Reply("Unsupported Content-Type", _V2_ERROR),
            422: Reply("Invalid `explain` parameter", _V2_ERROR),
            503: Reply("Loading", _V2_ERROR),
        },
        request_schema="V2Request",
        v2=True,
    ),
)


class Handlers:
    """The endpoints outside the hot path and the V2 protocol."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def predict(self, request: Request) -> Response:  # pragma: no cover
        # Never reached: the outer callable answers POST /predict. The route exists so other methods get a 405.
        raise RuntimeError("POST /predict is served by server.predict")

    async def health(self, request: Request) -> Response:
        return OrjsonResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        state = self.state
        if state.ready:
            return OrjsonResponse({"status": "ready", "model_version": state.require_model().version})
        return OrjsonResponse({"status": "draining" if state.draining else "loading"}, status_code=503)

    async def metadata(self, request: Request) -> Response:
        return Response(self.state.require_model().metadata, media_type="application/json")

    async def metrics(self, request: Request) -> Response:
        return Response(self.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(self, request: Request) -> Response:
        return Response(self.state.require_model().openapi, media_type="application/json")

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)


class V2Route(Route):
    """A V2 route answers a wrong method with the protocol's error body."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            raise V2Error("Method Not Allowed", 405, {"Allow": ", ".join(sorted(self.methods))})
        await self.app(scope, receive, send)


def _v2_fallback(v2_routes: list[Route]) -> Route:
    """Unknown paths under /v2 get the protocol's 404 (or 405 where only the method is wrong)."""

    async def not_found(request: Request) -> Response:
        path = request.url.path
        for route in v2_routes:
            if route.path_regex.match(path) and route.methods:
                raise V2Error("Method Not Allowed", 405, {"Allow": ", ".join(sorted(route.methods))})
        raise V2Error(f"no V2 endpoint at {path!r}", 404)

    return Route("/v2/{path:path}", not_found)


def build_routes(state: ServerState) -> list[BaseRoute]:
    """Starlette's route table for :data:`ENDPOINTS`, plus the Swagger UI assets."""
    handlers, v2 = Handlers(state), V2Handlers(state)
    v2_names = {
        "v2_server": v2.server_metadata,
        "v2_live": v2.live,
        "v2_ready": v2.ready,
        "v2_model": v2.model_metadata,
        "v2_model_ready": v2.model_ready,
        "v2_infer": v2.infer,
    }
    routes: list[BaseRoute] = []
    v2_routes: list[Route] = []
    for endpoint in ENDPOINTS:
        if endpoint.v2:
            route: Route = V2Route(endpoint.path, v2_names[endpoint.name], methods=[endpoint.method])
            v2_routes.append(route)
        else:
            route = Route(endpoint.path, getattr(handlers, endpoint.name), methods=[endpoint.method])
        routes.append(route)
    routes.append(_v2_fallback(v2_routes))
    routes.append(Mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path))))
    return routes
