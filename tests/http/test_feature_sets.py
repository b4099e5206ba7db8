"""A model trained on another feature set is served without code changes: the request schema, OpenAPI and
/metadata come from its metadata; the seed model still takes the first version's body byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from common.features import BY_NAME, FEATURE_SETS
from server.config.settings import Settings
from server.http.app import create_app
from tests.support import BEHAVIOUR_ROW, EXAMPLE_ROW

pytestmark = pytest.mark.http

SEED_BODY = (
    b'{"total_events": 12, "total_sessions": 3, "avg_events_per_session": 4, "revenue_per_session": 1, '
    b'"active_days": 3}'
)


@pytest.fixture(scope="module")
def behaviour_client(behaviour_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_path=behaviour_model))) as client:
        yield client


def test_the_seed_model_takes_the_first_versions_body_byte_for_byte(client: TestClient) -> None:
    assert json.loads(SEED_BODY) == EXAMPLE_ROW
    response = client.post("/predict", content=SEED_BODY, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert set(response.json()) == {"churn_probability", "churn", "threshold", "model_version"}
    assert client.get("/metadata").json()["feature_set"] == "seed"


def test_the_behaviour_model_asks_for_its_own_features(behaviour_client: TestClient) -> None:
    response = behaviour_client.post("/predict", json=BEHAVIOUR_ROW)
    assert response.status_code == 200, response.text
    refused = behaviour_client.post("/predict", content=SEED_BODY, headers={"content-type": "application/json"})
    assert refused.status_code == 422
    assert refused.json()["detail"] == [
        {"loc": ["body", "days_since_last_event"], "msg": "Field required", "type": "missing"}
    ]


def test_metadata_and_openapi_carry_the_feature_definitions(behaviour_client: TestClient) -> None:
    names = list(FEATURE_SETS["behaviour"])
    metadata = behaviour_client.get("/metadata").json()
    assert metadata["feature_set"] == "behaviour" and metadata["features"] == names
    for item in metadata["feature_schema"]:
        feature = BY_NAME[item["name"]]
        assert (item["description"], item["unit"], item["minimum"]) == (
            feature.description,
            feature.unit,
            feature.minimum,
        )
    schema = behaviour_client.get("/openapi.json").json()["components"]["schemas"]["ChurnFeatures"]
    assert list(schema["properties"]) == names
    recency = schema["properties"]["days_since_last_event"]
    assert recency["minimum"] == 0 and recency["description"].endswith("(days)")
