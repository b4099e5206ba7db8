"""Whatever goes wrong inside the server, the client gets JSON and the metrics stay truthful."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.http.app import PulseApp, create_app

pytestmark = pytest.mark.http


@pytest.fixture
def app_client(settings: Settings) -> Iterator[tuple[PulseApp, TestClient]]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def _broken(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("/secret/path/model.py exploded")


def _assert_json_500(response: Any, key: str = "detail") -> None:
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {key: "Internal Server Error"}  # in the route's error format: V2's is {"error"}
    assert "secret" not in response.text and "Traceback" not in response.text


def test_an_unexpected_error_outside_predict_is_a_json_500(
    app_client: tuple[PulseApp, TestClient], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app, client = app_client
    monkeypatch.setattr(app.state.metrics, "render", _broken)
    with caplog.at_level(logging.ERROR, logger="server"):
        _assert_json_500(client.get("/metrics"))
    assert [r.getMessage() for r in caplog.records] == ["unexpected error path=/metrics"]  # logged once


def test_an_unexpected_error_in_v2_infer_is_a_json_500_and_counted(
    app_client: tuple[PulseApp, TestClient], monkeypatch: pytest.MonkeyPatch, golden: dict[str, Any]
) -> None:
    app, client = app_client
    assert app.state.served is not None
    monkeypatch.setattr(app.state.served.model, "predict_proba", _broken)
    body = {"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": golden["inputs"][0]}]}
    _assert_json_500(client.post("/v2/models/churn/infer", json=body), key="error")
    monkeypatch.undo()
    text = client.get("/metrics").text
    assert 'pulse_http_requests_total{route="/v2/models/{model_name}/infer",status="500"} 1.0' in text


def test_an_unexpected_error_in_predict_is_a_json_500(
    app_client: tuple[PulseApp, TestClient], monkeypatch: pytest.MonkeyPatch, golden: dict[str, Any]
) -> None:
    app, client = app_client
    assert app.state.served is not None
    monkeypatch.setattr(app.state.served.model, "predict_one", _broken)
    _assert_json_500(client.post("/predict", json=golden["rows"][0]))


def _disconnecting_receive(first_chunk: bytes) -> Any:
    messages = [
        {"type": "http.request", "body": first_chunk, "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


@pytest.mark.parametrize("path", ["/predict", "/v2/models/churn/infer"])
def test_a_client_that_leaves_mid_body_is_neither_an_error_nor_counted(
    app_client: tuple[PulseApp, TestClient], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    app, client = app_client
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    with caplog.at_level(logging.WARNING):
        assert client.portal is not None
        client.portal.call(app, scope, _disconnecting_receive(b'{"inputs": ['), send)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not any(m.get("status", 0) >= 500 for m in sent)
    text = client.get("/metrics").text
    assert not re.search(r'status="5\d\d"', text)
    assert f'route="{path}"' not in text.replace("{model_name}", "churn")
    assert "pulse_http_requests_in_flight 0.0" in text  # nothing held (a scrape is never counted)


def test_metric_labels_come_from_the_matched_route(app_client: tuple[PulseApp, TestClient]) -> None:
    _, client = app_client
    client.get("/predict")  # wrong method: the /predict route still matched
    client.get("/v2/models/churn/ready")
    client.get("/v2/models/whatever-name-1/ready")
    client.get("/docs/assets/swagger-ui.css")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'pulse_http_requests_total{route="/predict",status="405"} 1.0' in text
    assert 'pulse_http_requests_total{route="/v2/models/{model_name}/ready",status="200"} 1.0' in text
    assert 'pulse_http_requests_total{route="/v2/models/{model_name}/ready",status="404"} 1.0' in text
    assert 'pulse_http_requests_total{route="/docs/assets",status="200"} 1.0' in text
    assert 'pulse_http_requests_total{route="other",status="404"} 1.0' in text
    assert "whatever-name" not in text and "no/such" not in text


def test_v2_inference_is_written_to_the_request_log(settings: Settings, tmp_path: Any, golden: dict[str, Any]) -> None:
    import dataclasses
    import json

    log = tmp_path / "requests.jsonl"
    app = create_app(dataclasses.replace(settings, request_log=log))
    rows = golden["inputs"][:3]
    body = {"inputs": [{"name": "features", "shape": [3, 5], "datatype": "FP32", "data": rows}]}
    with TestClient(app) as client:
        response = client.post("/v2/models/churn/infer", json=body)
        assert response.status_code == 200
    expected = response.json()["outputs"][0]["data"][1::2]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["churn_probability"] for line in lines] == pytest.approx(expected, abs=1e-7)
    logged = [[line[name] for name in golden["features"]] for line in lines]
    np.testing.assert_allclose(logged, rows, rtol=1e-6)
