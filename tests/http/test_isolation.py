"""No request can hurt another in the same turn (review H1): a body that makes the pipeline fail, expectedly or not,
gets its own answer in its route's format, and its neighbours get exactly what they get alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.core.v2 import INFER_ROUTE
from server.http.app import PulseApp, create_app
from server.pipeline import pipeline as pipeline_module
from server.pipeline.pipeline import PREDICT_ROUTE, Request
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.http

ROW = json.dumps(EXAMPLE_ROW).encode()
TENSOR = '{"name":"features","datatype":"FP32","shape":[1,5],"data":[1,1,1,1,1]}'
DEEP_PARAMETERS = ('{"inputs":[' + TENSOR + '],"parameters":' + "[" * 1000 + "]" * 1000 + "}").encode()


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[PulseApp]:
    application = create_app(settings)
    with TestClient(application):  # runs the lifespan: the model is served
        yield application


def _turn(app: PulseApp, *requests: tuple[str, bytes]) -> list[tuple[int, bytes]]:
    answers = app.pipeline.answer([Request(route, b"", body, time.perf_counter()) for route, body in requests])
    return [(answer.status, answer.body) for answer in answers]


def test_a_body_nested_1000_deep_is_a_400_for_itself_only(app: PulseApp) -> None:
    alone = _turn(app, (PREDICT_ROUTE, ROW))
    together = _turn(app, (PREDICT_ROUTE, ROW), (INFER_ROUTE, DEEP_PARAMETERS), (PREDICT_ROUTE, ROW))
    assert together[0] == together[2] == alone[0] and alone[0][0] == 200
    status, body = together[1]
    assert status == 400 and "parameters" in json.loads(body)["error"] and len(body) < 300


def test_an_unexpected_failure_is_a_500_for_that_request_only(app: PulseApp, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("internal detail that must not reach a client")

    alone = _turn(app, (PREDICT_ROUTE, ROW))
    monkeypatch.setattr(pipeline_module, "parse_infer", broken)
    together = _turn(app, (PREDICT_ROUTE, ROW), (INFER_ROUTE, b'{"inputs":[' + TENSOR.encode() + b"]}"))
    assert together[0] == alone[0]
    assert together[1] == (500, b'{"error":"Internal Server Error"}')  # the V2 route's format, no internals


def test_a_failing_shared_call_fails_only_the_request_at_fault(
    app: PulseApp, monkeypatch: pytest.MonkeyPatch, exported: Path
) -> None:
    alone = _turn(app, (PREDICT_ROUTE, ROW))
    real = pipeline_module.score_together

    def fails_with_the_marked_row(served, metrics, parsed):  # type: ignore[no-untyped-def]
        if any(request.rows == [7.0] * 5 for request in parsed):
            raise RuntimeError("a row onnxruntime cannot take")
        return real(served, metrics, parsed)

    monkeypatch.setattr(pipeline_module, "score_together", fails_with_the_marked_row)
    marked = json.dumps(dict.fromkeys(EXAMPLE_ROW, 7.0)).encode()
    together = _turn(app, (PREDICT_ROUTE, ROW), (PREDICT_ROUTE, marked), (PREDICT_ROUTE, ROW))
    assert together[0] == together[2] == alone[0]
    assert together[1] == (500, b'{"detail":"Internal Server Error"}')


def test_a_poisoned_turn_over_http_keeps_its_neighbours_whole(app: PulseApp) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(INFER_ROUTE.replace("{model_name}", "churn"), content=DEEP_PARAMETERS)
    assert response.status_code == 400 and "error" in response.json()


def test_a_versioned_infer_answered_after_a_swap_is_the_protocols_404(app: PulseApp) -> None:
    """Review L9: the path's version was checked when the head arrived; a swap landing while the body uploaded had
    the new model answer a request that named the old one."""
    served = app.state.served
    assert served is not None
    body = ('{"inputs":[' + TENSOR + "]}").encode()
    now = time.perf_counter()
    same, swapped = app.pipeline.answer(
        [
            Request(INFER_ROUTE, b"", body, now, version=served.info.version),
            Request(INFER_ROUTE, b"", body, now, version="rf-the-one-before"),
        ]
    )
    assert same.status == 200
    assert swapped.status == 404 and b"has no version 'rf-the-one-before'" in swapped.body
    path = b"/v2/models/churn/versions/rf-the-one-before/infer"
    assert app.pipeline.version_named(path) == "rf-the-one-before"
    assert app.pipeline.version_named(b"/v2/models/churn/infer") is None
