"""The admin routes: a model swap and a shadow model asked over HTTP (an ``admin`` key; every worker follows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.core.errors import Forbidden, NotReady, ValidationFailed, field_error
from server.core.validation import decode_json
from server.http.asgi import OrjsonResponse, read_body
from server.pipeline.head import RequestHead
from server.pipeline.state import ServerState

ADMIN_BODY_BYTES = 65536  # a path, a sha256 and a flag or two


class AdminHandlers:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def admin_shadow(self, request: Request) -> Response:
        state = self._admin("a shadow model over HTTP needs")
        length = RequestHead.scan(request.scope["headers"]).declared_length()
        body = decode_json(await read_body(request.receive, length, ADMIN_BODY_BYTES, state.body_budget))
        path, sha256, sample = _shadow_request(body, state.settings.shadow_sample)
        assert state.swapper is not None
        shadow, workers = await state.swapper.admin_shadow(path, sha256, sample)
        assert shadow is not None
        return OrjsonResponse(
            {"shadow_version": shadow.version, "sha256": shadow.sha256, "sample": sample, "workers": workers}
        )

    async def admin_shadow_off(self, request: Request) -> Response:
        state = self._admin("a shadow model over HTTP needs")
        assert state.swapper is not None
        _, workers = await state.swapper.admin_shadow(None, "", 0.0)
        return OrjsonResponse({"shadow_version": None, "sha256": None, "sample": 0.0, "workers": workers})

    def _admin(self, what: str) -> ServerState:
        """The state, for an admin route: API keys must be on (so an admin key is what let the request in)."""
        state = self.state
        if state.keys is None:
            raise Forbidden(f"{what} API keys: set PULSE_API_KEYS_FILE with an admin key")
        if state.swapper is None:
            raise NotReady("model not loaded yet")
        return state

    async def admin_model(self, request: Request) -> Response:
        state = self.state
        if state.keys is None:
            raise Forbidden(
                "model swaps over HTTP need API keys: set PULSE_API_KEYS_FILE with an admin key, or send SIGHUP"
            )
        if state.swapper is None:
            raise NotReady("model not loaded yet")
        length = RequestHead.scan(request.scope["headers"]).declared_length()
        body = decode_json(await read_body(request.receive, length, ADMIN_BODY_BYTES, state.body_budget))
        path, sha256, force = _swap_request(body)
        previous = state.require_model().info.version
        served, workers = await state.swapper.admin_swap(path, sha256, force)
        return OrjsonResponse(
            {
                "model_version": served.info.version,
                "sha256": served.info.sha256,
                "previous_version": previous,
                "workers": workers,
            }
        )


def _shadow_request(body: object, default_sample: float) -> tuple[Path, str, float]:
    sample: Any = body.get("sample", default_sample) if isinstance(body, dict) else None
    if (
        not isinstance(body, dict)
        or type(body.get("path")) is not str
        or not body["path"]
        or type(body.get("sha256", "")) is not str
        or type(sample) not in (int, float)
        or not 0 <= sample <= 1
        or set(body) - {"path", "sha256", "sample"}
    ):
        raise ValidationFailed(
            [
                field_error(
                    ["body"],
                    "Expected {path: string, sha256?: string, sample?: number from 0 to 1}",
                    "model_attributes_type",
                )
            ]
        )
    return Path(body["path"]), body.get("sha256", ""), float(sample)


def _swap_request(body: object) -> tuple[Path, str, bool]:
    if type(body) is not dict or type(body.get("path")) is not str or not body["path"]:
        raise ValidationFailed(
            [field_error(["body", "path"], "A model file path on the server is required", "missing")]
        )
    sha256, force = body.get("sha256", ""), body.get("force", False)
    if type(sha256) is not str or type(force) is not bool or set(body) - {"path", "sha256", "force"}:
        raise ValidationFailed(
            [
                field_error(
                    ["body"], "Expected {path: string, sha256?: string, force?: boolean}", "model_attributes_type"
                )
            ]
        )
    return Path(body["path"]), sha256, force
