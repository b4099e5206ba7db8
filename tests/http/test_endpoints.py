"""Health, readiness, metadata, metrics, OpenAPI and the offline docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.app import create_app
from server.settings import Settings

pytestmark = pytest.mark.http


def test_health_is_exactly_the_original(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_is_503_until_model_loaded(settings: Settings) -> None:
    app = create_app(settings)
    client = TestClient(app, raise_server_exceptions=False)  # no `with`: the lifespan has not run
    assert client.get("/ready").status_code == 503
    assert client.get("/health").status_code == 200
    response = client.post("/predict", json={})
    assert response.status_code == 503
    assert client.get("/v2/health/ready").status_code == 503
    with TestClient(app) as started:
        assert started.get("/ready").json()["status"] == "ready"
    assert client.get("/ready").json() == {"status": "draining"}  # after shutdown


def test_metadata_comes_from_the_model_file(client: TestClient, exported: Path) -> None:
    import json

    metrics = json.loads((exported.parent / "metrics.json").read_text())
    body = client.get("/metadata").json()
    assert body["model_version"] == metrics["model_version"]
    assert body["features"] == metrics["features"]
    assert body["threshold"] == metrics["threshold"]
    assert body["metrics"] == metrics["test"]
    assert body["sha256"] == (exported.parent / "model.onnx.sha256").read_text().split()[0]


def test_metrics_count_requests_and_compute(client: TestClient) -> None:
    client.post("/predict", json={})
    client.get("/health")
    text = client.get("/metrics").text
    assert re.search(r'pulse_http_requests_total\{route="/predict",status="422"\} [1-9]', text)
    assert re.search(r'pulse_http_requests_total\{route="/health",status="200"\} [1-9]', text)
    assert "pulse_model_compute_seconds_bucket" in text
    assert "pulse_http_request_duration_seconds_bucket" in text
    assert "pulse_http_requests_in_flight" in text
    assert re.search(r'pulse_model_info\{sha256="[0-9a-f]{64}",version="rf-', text)


def test_metric_labels_stay_bounded_for_random_paths(client: TestClient) -> None:
    for i in range(5):
        client.get(f"/random-{i}")
    text = client.get("/metrics").text
    assert "random-" not in text
    assert 'route="other"' in text


def test_openapi_is_derived_from_the_model(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["ChurnFeatures"]
    features = client.get("/metadata").json()["features"]
    assert list(schema["properties"]) == features
    assert schema["required"] == features
    assert schema["additionalProperties"] is False
    assert "/predict" in spec["paths"] and "post" in spec["paths"]["/predict"]


def test_docs_page_and_its_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page.text):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset
