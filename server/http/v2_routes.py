"""The Open Inference Protocol V2's metadata and health endpoints, as Starlette handlers. Its ``infer`` for the served
model is the pipeline's (``server.http.app`` hands it to the ASGI door before routing); the route table keeps the
path so that other model names get the protocol's 404."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from server.core.served import ServedModel
from server.core.v2 import SERVER_METADATA, model_config, model_metadata, served_or_error
from server.http.asgi import OrjsonResponse, answer_response
from server.pipeline.probes import probe_answer
from server.pipeline.state import ServerState


class V2Handlers:
    """The protocol's endpoints for the one model this server serves."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.model_name = state.settings.model_name

    async def server_metadata(self, request: Request) -> Response:
        return OrjsonResponse(SERVER_METADATA)

    async def live(self, request: Request) -> Response:  # HEAD: the GET is answered before routing
        return answer_response(probe_answer(self.state, b"/v2/health/live"))

    async def ready(self, request: Request) -> Response:
        return answer_response(probe_answer(self.state, b"/v2/health/ready"))

    def _served(self, request: Request) -> ServedModel:
        params = request.path_params
        return served_or_error(self.state.served, self.model_name, params["model_name"], params.get("model_version"))

    async def model_metadata(self, request: Request) -> Response:
        served = self._served(request)
        return OrjsonResponse(model_metadata(self.model_name, served.info, served.model.n_classes))

    async def model_ready(self, request: Request) -> Response:
        self._served(request)
        ready = self.state.ready
        return OrjsonResponse({"name": self.model_name, "ready": ready}, status_code=200 if ready else 503)

    async def model_config(self, request: Request) -> Response:
        served = self._served(request)
        return OrjsonResponse(model_config(self.model_name, served.info, served.model.n_classes))

    async def infer(self, request: Request) -> Response:
        """Reached only for a model (or version) this server does not serve: the protocol's 404."""
        self._served(request)
        raise AssertionError("infer for the served model is answered by the pipeline, before routing")
