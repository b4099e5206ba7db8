"""Bad input gets a clear 4xx in JSON, never a 500 or a traceback."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.http.conftest import MAX_BATCH, MAX_BODY
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.http

ROW = EXAMPLE_ROW


def _post(client: TestClient, body: bytes | str, content_type: str = "application/json") -> Any:
    return client.post("/predict", content=body, headers={"content-type": content_type})


def _errors(response: Any) -> list[tuple[tuple[Any, ...], str]]:
    assert response.status_code == 422, response.text
    return [(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"{", 400, "Malformed JSON"),
        (b"{'a': 1}", 400, "Malformed JSON"),
        (b"", 400, "Malformed JSON"),
        (b"\xff\xfe", 400, "Malformed JSON"),
        (b"[1, 2", 400, "Malformed JSON"),
        (b"[" * 5000 + b"]" * 5000, 400, "JSON nests deeper than"),  # well-formed, too deep to parse
        (b"[" * 100_000 + b"]" * 100_000, 413, "exceeds the limit"),
    ],
)
def test_each_unparseable_body_gets_its_own_status(client: TestClient, body: bytes, status: int, detail: str) -> None:
    response = _post(client, body)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail) if status == 400 else detail in response.json()["detail"]


def test_malformed_json_message_says_so(client: TestClient) -> None:
    response = _post(client, b'{"total_events": }')
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx", "multipart/form-data"]
)
def test_not_json_content_type_is_415(client: TestClient, content_type: str) -> None:
    response = _post(client, b"{}", content_type)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


def test_body_over_the_limit_is_413_from_its_declared_length(client: TestClient) -> None:
    response = _post(client, b" " * (MAX_BODY + 1))
    assert response.status_code == 413


def test_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(MAX_BODY // 1000 + 2):
            yield b" " * 1000

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_batch_over_the_row_limit_is_413(client: TestClient) -> None:
    response = client.post("/predict", json=[ROW] * (MAX_BATCH + 1))
    assert response.status_code == 413
    assert str(MAX_BATCH) in response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"total_events": None}, [(("body", "total_events"), "float_type")]),
        ({"total_events": "10"}, [(("body", "total_events"), "float_type")]),
        ({"total_events": True}, [(("body", "total_events"), "float_type")]),
        ({"total_events": {"v": 1}}, [(("body", "total_events"), "float_type")]),
        ({"total_events": [1]}, [(("body", "total_events"), "float_type")]),
        ({"total_events": -1}, [(("body", "total_events"), "greater_than_equal")]),
        ({"total_events": 1e39}, [(("body", "total_events"), "finite_number")]),
        ({"total_events": 10**400}, [(("body", "total_events"), "finite_number")]),
        ({"totl_events": 10}, [(("body", "totl_events"), "extra_forbidden")]),
        (
            {"active_days": -2, "total_sessions": "x"},
            [(("body", "total_sessions"), "float_type"), (("body", "active_days"), "greater_than_equal")],
        ),
    ],
)
def test_invalid_fields_are_422_naming_each_field(
    client: TestClient, change: dict[str, Any], expected: list[Any]
) -> None:
    row = {**ROW, **change}
    if "totl_events" in change:
        del row["total_events"]
        expected = [(("body", "total_events"), "missing"), *expected]
    import json

    response = _post(client, json.dumps(row))
    assert _errors(response) == expected
    for error in response.json()["detail"]:
        assert error["msg"]


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_nan_and_infinity_are_422(client: TestClient, literal: bytes) -> None:
    body = (
        b'{"total_events": %s, "total_sessions": 2, "avg_events_per_session": 5, "revenue_per_session": 0, '
        b'"active_days": 2}' % literal
    )
    assert _errors(_post(client, body)) == [(("body", "total_events"), "finite_number")]


def test_missing_fields_are_all_named(client: TestClient) -> None:
    assert _errors(client.post("/predict", json={})) == [(("body", name), "missing") for name in ROW]


def test_batch_errors_name_the_row(client: TestClient) -> None:
    rows = [ROW, {**ROW, "active_days": "two"}, ROW, 7]
    assert _errors(client.post("/predict", json=rows)) == [
        (("body", 1, "active_days"), "float_type"),
        (("body", 3), "dict_type"),
    ]


def test_empty_array_is_422(client: TestClient) -> None:
    assert _errors(client.post("/predict", json=[])) == [(("body",), "too_short")]


@pytest.mark.parametrize("body", [b"7", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object_or_array_is_422(client: TestClient, body: bytes) -> None:
    assert _errors(_post(client, body)) == [(("body",), "model_attributes_type")]


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/predict"), ("PUT", "/predict"), ("POST", "/health"), ("DELETE", "/metadata")]
)
def test_wrong_method_is_json_405(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


def test_errors_leak_no_internals(client: TestClient) -> None:
    for response in (_post(client, b"{"), client.post("/predict", json={"x": 1}), client.get("/nope")):
        text = response.text
        assert "Traceback" not in text and "/site-packages/" not in text and ".py" not in text
