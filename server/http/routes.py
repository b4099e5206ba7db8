"""The route table: every endpoint once, with what OpenAPI says of it. Starlette's routes, the OpenAPI paths
and the metric labels (Starlette's matched ``scope["route"]``) all come from :data:`ENDPOINTS`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import swagger_ui_bundle
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from server.core.access import needed_scope
from server.core.errors import V2Error
from server.http.admin_routes import AdminHandlers
from server.http.asgi import answer_response
from server.http.v2_routes import V2Handlers
from server.pipeline.probes import probe_answer
from server.pipeline.state import ServerState

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


OPENMETRICS = "application/openmetrics-text"
OPENMETRICS_TYPE = f"{OPENMETRICS}; version=1.0.0; charset=utf-8"


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
    def key_scope(self) -> str | None:
        """The API key scope it needs when keys are on (``None``: open), by the one rule every door asks."""
        return needed_scope(self.path)

    @property
    def operation_id(self) -> str:
        """Unique in the OpenAPI document: the V2 routes that name a model version share their handler."""
        return f"{self.name}_version" if "{model_version}" in self.path else self.name

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)


_NOT_READY = Reply("Model not loaded yet", "Error")
_V2_ERROR = "V2Error"
_UNKNOWN_MODEL = Reply("Unknown model or version", _V2_ERROR)

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
        "/metrics",
        "GET",
        "metrics",
        "Prometheus metrics",
        {200: Reply("Prometheus text format", None, "text/plain")},
    ),
    Endpoint(
        "/openapi.json",
        "GET",
        "openapi",
        "This document",
        {200: Reply("OpenAPI 3.0", "Object"), 503: _NOT_READY},
    ),
    Endpoint("/docs", "GET", "docs", "Swagger UI", {200: Reply("HTML page", None, "text/html")}),
    Endpoint(
        "/v2",
        "GET",
        "v2_server",
        "V2 server metadata",
        {200: Reply("Server metadata", "Object")},
        v2=True,
    ),
    Endpoint("/v2/health/live", "GET", "v2_live", "V2 liveness", {200: Reply("Live", "V2Live")}, v2=True),
    Endpoint(
        "/v2/health/ready",
        "GET",
        "v2_ready",
        "V2 readiness",
        {200: Reply("Ready", "V2Ready"), 503: Reply("Not ready", "V2Ready")},
        v2=True,
    ),
    *(
        endpoint
        for model in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}")
        for endpoint in (
            Endpoint(
                model,
                "GET",
                "v2_model",
                "V2 model metadata",
                {200: Reply("Metadata", "Object"), 404: _UNKNOWN_MODEL, 503: Reply("Loading", _V2_ERROR)},
                v2=True,
            ),
            Endpoint(
                f"{model}/ready",
                "GET",
                "v2_model_ready",
                "V2 model readiness",
                {
                    200: Reply("Ready", "V2ModelReady"),
                    404: _UNKNOWN_MODEL,
                    503: Reply("Loading or draining", "V2ModelReady"),
                },
                v2=True,
            ),
            Endpoint(
                f"{model}/infer",
                "POST",
                "v2_infer",
                "Open Inference Protocol V2 inference",
                {
                    200: Reply("The model's probability output", "V2Response"),
                    400: Reply("Bad request", _V2_ERROR),
                    404: _UNKNOWN_MODEL,
                    413: Reply("Body or batch too large", _V2_ERROR),
                    415: Reply("Unsupported Content-Type", _V2_ERROR),
                    422: Reply("Invalid `explain` parameter", _V2_ERROR),
                    503: Reply("Loading", _V2_ERROR),
                },
                request_schema="V2Request",
                v2=True,
            ),
            Endpoint(
                f"{model}/config",
                "GET",
                "v2_model_config",
                "The model's configuration as Triton's clients read it",
                {
                    200: Reply("Triton model configuration", "Object"),
                    404: _UNKNOWN_MODEL,
                    503: Reply("Loading", _V2_ERROR),
                },
                v2=True,
            ),
        )
    ),
    Endpoint(
        "/admin/model",
        "POST",
        "admin_model",
        "Swap the served model for a file on the server, without downtime (every worker)",
        {
            200: Reply("Every live worker serves the file (its sha256); each worker's version", "SwapResult"),
            400: Reply("Malformed JSON", "Error"),
            401: Reply("No valid API key", "Error"),
            403: Reply("The key's scope is not admin, or API keys are off", "Error"),
            409: Reply("A later swap superseded this one before every worker served it", "Error"),
            422: Reply("The new model failed a check (the old one keeps serving), or a bad request", "Error"),
            503: _NOT_READY,
            504: Reply("Some live workers did not serve the new model in time; the detail names them", "Error"),
        },
        request_schema="SwapRequest",
    ),
    Endpoint(
        "/admin/shadow",
        "POST",
        "admin_shadow",
        "Score a sampled share of live rows with a candidate model too, after their answers (every worker)",
        {
            200: Reply("Every live worker scores with the candidate; each worker's shadow version", "ShadowResult"),
            400: Reply("Malformed JSON", "Error"),
            401: Reply("No valid API key", "Error"),
            403: Reply("The key's scope is not admin, or API keys are off", "Error"),
            409: Reply("A later shadow request superseded this one before every worker took it", "Error"),
            422: Reply("The candidate failed a check (features, sha256, golden rows), or a bad request", "Error"),
            503: _NOT_READY,
            504: Reply("Some live workers did not take the candidate in time; the detail names them", "Error"),
        },
        request_schema="ShadowRequest",
    ),
    Endpoint(
        "/admin/shadow",
        "DELETE",
        "admin_shadow_off",
        "Stop scoring with the shadow model (every worker)",
        {
            200: Reply("No worker scores with a shadow", "ShadowResult"),
            401: Reply("No valid API key", "Error"),
            403: Reply("The key's scope is not admin, or API keys are off", "Error"),
            503: _NOT_READY,
        },
    ),
)
ROUTE_PATHS = frozenset(endpoint.path for endpoint in ENDPOINTS if "{" not in endpoint.path)


def key_scope(path: str) -> str | None:
    """The API key scope a path needs (:func:`~server.core.access.needed_scope`); paths no route serves need none:
    they answer 404 whoever asks."""
    return needed_scope(path) if path in ROUTE_PATHS or path.startswith("/v2/models/") else None


class Handlers:
    """The endpoints outside the hot path and the V2 protocol."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def predict(self, request: Request) -> Response:  # pragma: no cover
        # Never reached: the outer callable answers POST /predict. The route exists so other methods get a 405.
        raise RuntimeError("POST /predict is served by server.pipeline.predict")

    # The probes' GET is answered before routing (server.pipeline.probes); these answer HEAD, alike.
    async def health(self, request: Request) -> Response:
        return answer_response(probe_answer(self.state, b"/health"))

    async def ready(self, request: Request) -> Response:
        return answer_response(probe_answer(self.state, b"/ready"))

    async def metadata(self, request: Request) -> Response:
        return Response(self.state.require_model().metadata, media_type="application/json")

    async def metrics(self, request: Request) -> Response:
        if OPENMETRICS in request.headers.get("accept", ""):  # what Prometheus asks for to store exemplars
            return Response(self.state.metrics.render(openmetrics=True), media_type=OPENMETRICS_TYPE)
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

    return Route("/v2/{path:path}", not_found, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


def _by_method(handlers: dict[str, Callable[[Request], Awaitable[Response]]]) -> Callable[..., Awaitable[Response]]:
    """One path's handler: the one for the request's method (HEAD answered by GET's)."""
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def dispatch(request: Request) -> Response:
        return await handlers["GET" if request.method == "HEAD" else request.method](request)

    return dispatch


def build_routes(state: ServerState) -> list[BaseRoute]:
    """Starlette's route table for :data:`ENDPOINTS`, plus the Swagger UI assets."""
    handlers, v2, admin = Handlers(state), V2Handlers(state), AdminHandlers(state)
    v2_names = {
        "v2_server": v2.server_metadata,
        "v2_live": v2.live,
        "v2_ready": v2.ready,
        "v2_model": v2.model_metadata,
        "v2_model_ready": v2.model_ready,
        "v2_infer": v2.infer,
        "v2_model_config": v2.model_config,
    }
    routes: list[BaseRoute] = []
    v2_routes: list[Route] = []
    for endpoint in ENDPOINTS:
        if endpoint.v2:
            route: Route = V2Route(endpoint.path, v2_names[endpoint.name], methods=[endpoint.method])
            v2_routes.append(route)
        else:
            owner = admin if endpoint.key_scope == "admin" else handlers
            methods = {e.method: getattr(owner, e.name) for e in ENDPOINTS if e.path == endpoint.path}
            if next(e for e in ENDPOINTS if e.path == endpoint.path) is not endpoint:
                continue  # its path's route is made once, for every method (a 405 then lists them all)
            route = Route(endpoint.path, _by_method(methods), methods=list(methods))
        routes.append(route)
    routes.append(_v2_fallback(v2_routes))
    routes.append(Mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path))))
    return routes
