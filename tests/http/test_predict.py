"""/predict answers what scikit-learn would, one row or many, and keeps the request's order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.http.conftest import MAX_BATCH
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.http


def test_single_row_matches_the_exported_expectation(client: TestClient, golden: dict[str, Any]) -> None:
    response = client.post("/predict", json=golden["rows"][0])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"churn_probability", "churn", "threshold", "model_version"}
    assert body["churn_probability"] == pytest.approx(golden["probabilities"][0], abs=1e-6)
    assert body["churn"] is (body["churn_probability"] >= body["threshold"])
    metadata = client.get("/metadata").json()
    assert body["threshold"] == metadata["threshold"]
    assert body["model_version"] == metadata["model_version"]


def test_batch_results_keep_request_order(client: TestClient, golden: dict[str, Any]) -> None:
    rows = golden["rows"][::-1]
    response = client.post("/predict", json=rows)
    assert response.status_code == 200
    got = [r["churn_probability"] for r in response.json()]
    assert got == pytest.approx(golden["probabilities"][::-1], abs=1e-6)
    singles = [client.post("/predict", json=row).json()["churn_probability"] for row in rows]
    assert got == singles


def test_reordering_json_fields_changes_nothing(client: TestClient, golden: dict[str, Any]) -> None:
    row = golden["rows"][1]
    reordered = dict(reversed(list(row.items())))
    assert client.post("/predict", json=reordered).json() == client.post("/predict", json=row).json()


def test_integers_and_floats_are_both_numbers(client: TestClient, golden: dict[str, Any]) -> None:
    row = {k: int(v) for k, v in golden["rows"][2].items()}
    as_float = {k: float(v) for k, v in row.items()}
    assert client.post("/predict", json=row).json() == client.post("/predict", json=as_float).json()


def test_content_type_with_charset_is_json(client: TestClient, golden: dict[str, Any]) -> None:
    response = client.post(
        "/predict", content=json.dumps(golden["rows"][0]), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


def test_a_user_who_stopped_scores_above_a_highly_active_one(client: TestClient) -> None:
    gone = {
        "total_events": 3,
        "total_sessions": 1,
        "avg_events_per_session": 3,
        "revenue_per_session": 0,
        "active_days": 1,
    }
    active = {
        "total_events": 400,
        "total_sessions": 80,
        "avg_events_per_session": 5,
        "revenue_per_session": 3.0,
        "active_days": 40,
    }
    scores = [r["churn_probability"] for r in client.post("/predict", json=[gone, active]).json()]
    assert scores[0] > scores[1]


def test_batch_at_the_row_limit_is_accepted(client: TestClient, golden: dict[str, Any]) -> None:
    rows = (golden["rows"] * MAX_BATCH)[:MAX_BATCH]
    response = client.post("/predict", json=rows)
    assert response.status_code == 200
    assert len(response.json()) == MAX_BATCH


def test_batch_json_is_the_same_as_one_object_per_row(client: TestClient, golden: dict[str, Any]) -> None:
    batch = client.post("/predict", json=golden["rows"]).json()
    singles = [client.post("/predict", json=row).json() for row in golden["rows"]]
    assert batch == singles


def test_a_columnar_batch_scores_like_the_same_rows_and_answers_in_columns(client: TestClient) -> None:
    rows = [EXAMPLE_ROW, {**EXAMPLE_ROW, "active_days": 1, "total_events": 3}, {**EXAMPLE_ROW, "total_sessions": 30}]
    columns = {name: [row[name] for row in rows] for name in EXAMPLE_ROW}
    by_rows = client.post("/predict", json=rows).json()
    answer = client.post("/predict", json=columns).json()
    assert answer["churn_probability"] == [r["churn_probability"] for r in by_rows]
    assert answer["churn"] == [r["churn"] for r in by_rows]
    assert answer["threshold"] == by_rows[0]["threshold"] and answer["model_version"] == by_rows[0]["model_version"]


@pytest.mark.parametrize(
    ("change", "loc", "error_type"),
    [
        ({"total_events": [1, "2", 3]}, ["body", "total_events", 1], "float_type"),
        ({"total_events": [1, True, 3]}, ["body", "total_events", 1], "float_type"),
        ({"total_events": [1, -2, 3]}, ["body", "total_events", 1], "greater_than_equal"),
        ({"total_events": [1, 2, 1e39]}, ["body", "total_events", 2], "finite_number"),
        ({"total_events": [1, 2]}, ["body"], "columns_length"),
        ({"total_events": 1}, ["body", "total_sessions"], "float_type"),  # not all lists: read as one row
        ({"extra": [1, 2, 3]}, ["body", "extra"], "extra_forbidden"),
    ],
)
def test_a_bad_columnar_batch_is_a_422_naming_the_cell(
    client: TestClient, change: dict[str, Any], loc: list[Any], error_type: str
) -> None:
    columns: dict[str, Any] = {name: [value] * 3 for name, value in EXAMPLE_ROW.items()}
    response = client.post("/predict", json={**columns, **change})
    assert response.status_code == 422
    assert [loc, error_type] in [[error["loc"], error["type"]] for error in response.json()["detail"]]


def test_columns_over_the_batch_limit_are_413(client: TestClient) -> None:
    columns = {name: [value] * (MAX_BATCH + 1) for name, value in EXAMPLE_ROW.items()}
    assert client.post("/predict", json=columns).status_code == 413
