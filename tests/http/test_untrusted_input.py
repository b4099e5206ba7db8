"""Inputs from hostile or careless clients: every answer a JSON 4xx (or 503 + Retry-After), the gauges settled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.core.errors import ApiError, Overloaded, V2Error
from server.core.limits import BodyBudget
from server.core.v2 import split_binary_body
from server.http.app import PulseApp, create_app
from server.http.asgi import read_body
from server.pipeline.head import RequestHead
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.http

JSON = {"content-type": "application/json"}
INFER = "/v2/models/churn/infer"
TENSOR = '{"name":"features","datatype":"FP32","shape":[1,5],"data":[1,1,1,1,1]}'


@pytest.fixture(scope="module")
def app_client(settings: Settings) -> Iterator[tuple[PulseApp, TestClient]]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def _json_error(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/json"  # type: ignore[attr-defined]
    body: dict[str, object] = json.loads(response.content)  # type: ignore[attr-defined]
    return body


@pytest.mark.parametrize("body", [b'{"\\ud800":1}', b'[{"\\ud800":1}]'], ids=["object", "batch"])
def test_a_key_json_cannot_echo_is_a_422_and_leaves_no_request_in_flight(
    app_client: tuple[PulseApp, TestClient], body: bytes
) -> None:
    app, client = app_client
    metrics = app.state.metrics
    before = metrics.requests[("/predict", 422)]
    detail = _json_error(client.post("/predict", content=body, headers=JSON), 422)["detail"]
    assert any(error["loc"][-1] == "\\ud800" for error in detail)  # type: ignore[union-attr, index]
    assert metrics.in_flight == 0
    assert metrics.requests[("/predict", 422)] == before + 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ('{"id":"\\ud800","inputs":[' + TENSOR + "]}", {}),
        ('{"id":' + "[" * 300 + "]" * 300 + ',"inputs":[' + TENSOR + "]}", {}),
        ('{"id":7,"inputs":[' + TENSOR + "]}", {}),
        *(('{"inputs":[' + TENSOR + '],"outputs":' + value + "}", {}) for value in ("5", "true", "1.5")),
        *(
            ("{}", {"inference-header-content-length": value.encode("latin-1")})
            for value in ("\u00b2", "\u00b9", "9" * 5000)
        ),
    ],
    ids=[
        "id surrogate",
        "id nested",
        "id number",
        "outputs 5",
        "outputs true",
        "outputs 1.5",
        "length ²",
        "length ¹",
        "length 5000 digits",
    ],
)
def test_v2_requests_that_used_to_be_500s_are_protocol_400s(
    app_client: tuple[PulseApp, TestClient], body: str, headers: dict[str, bytes]
) -> None:
    app, client = app_client
    response = client.post(INFER, content=body.encode(), headers={**JSON, **headers})
    assert "error" in _json_error(response, 400)
    assert app.state.metrics.in_flight == 0


def test_a_compressed_body_is_415_not_malformed_json(app_client: tuple[PulseApp, TestClient]) -> None:
    _, client = app_client
    headers = {**JSON, "content-encoding": "gzip"}
    assert "gzip" in str(_json_error(client.post("/predict", json=EXAMPLE_ROW, headers=headers), 415)["detail"])
    assert "gzip" in str(_json_error(client.post(INFER, content=b"{}", headers=headers), 415)["error"])


def test_only_the_exact_octet_stream_type_selects_the_binary_extension(app_client: tuple[PulseApp, TestClient]) -> None:
    _, client = app_client
    headers = {"content-type": "application/octet-streamXYZ", "inference-header-content-length": "2"}
    _json_error(client.post(INFER, content=b"{}", headers=headers), 415)


def test_a_trailing_slash_is_not_redirected_to_the_clients_host(app_client: tuple[PulseApp, TestClient]) -> None:
    _, client = app_client
    response = client.post("/predict/", json=EXAMPLE_ROW, headers={"host": "evil.example"}, follow_redirects=False)
    _json_error(response, 404)
    assert "location" not in response.headers


def test_bodies_past_the_pending_body_budget_get_503_with_retry_after(exported: Path) -> None:
    settings = Settings(model_path=exported, max_body_bytes=20_000, max_pending_body_bytes=1024)
    app = create_app(settings)
    rows = json.dumps([EXAMPLE_ROW] * 20).encode()  # about 2 KB, over the 1 KB budget
    with TestClient(app, raise_server_exceptions=False) as client:
        for path, key in (("/predict", "detail"), (INFER, "error")):
            response = client.post(path, content=rows, headers=JSON)
            assert key in _json_error(response, 503)
            assert response.headers["retry-after"] == "1" and response.headers["connection"] == "close"
        assert client.post("/predict", json=EXAMPLE_ROW).status_code == 200  # the budget is given back
    assert app.state.metrics.rejected[("body_memory", 503)] == 2
    assert app.state.body_budget.held == 0


async def _chunks(*parts: bytes) -> list[dict[str, object]]:
    return [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]


def _declared(length: bytes | None) -> int | None:
    return RequestHead.scan([] if length is None else [(b"content-length", length)]).declared_length()


def test_read_body_holds_the_budget_only_while_reading() -> None:
    async def read(length: bytes | None, budget: BodyBudget, *parts: bytes) -> bytes:
        messages = iter(await _chunks(*parts))

        async def receive() -> dict[str, object]:
            return next(messages)

        return await read_body(receive, _declared(length), 10_000, budget)  # type: ignore[arg-type]

    rejected: dict[tuple[str, int], int] = {("body_memory", 503): 0}
    budget = BodyBudget(2048, rejected)
    assert asyncio.run(read(b"5 ", budget, b"12345")) == b"12345"  # Content-Length with a trailing space
    assert asyncio.run(read(None, budget, b"a" * 1500, b"b" * 500)) == b"a" * 1500 + b"b" * 500
    with pytest.raises(Overloaded):
        asyncio.run(read(b"3000", budget, b"x"))
    with pytest.raises(Overloaded):  # no Content-Length: refused as the chunks arrive
        asyncio.run(read(None, budget, b"a" * 1500, b"b" * 1500, b"c"))
    with pytest.raises(ApiError, match="not a number"):
        asyncio.run(read(b"9" * 40, budget, b"x"))
    with pytest.raises(ApiError, match="not a number"):
        asyncio.run(read("\u00b2".encode(), budget, b"x"))  # a superscript digit: isdigit() but not int()
    assert budget.held == 0 and rejected[("body_memory", 503)] == 2


@pytest.mark.parametrize("length", ["\u00b2", "\u00b3", "\u00b9", "9" * 5000])
def test_a_binary_header_length_must_be_a_few_ascii_digits(length: str) -> None:
    """Over the wire these arrive as Latin-1 bytes (the hostile suite sends them); ``isdigit`` accepts them and
    ``int`` does not, which used to be a 500."""
    with pytest.raises(V2Error, match="does not fit"):
        split_binary_body(b"{}", length)
