"""Health, readiness, metadata, metrics, OpenAPI and the offline docs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.http.app import create_app

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


def _resolve(schema: Any, components: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _resolve(components[schema["$ref"].rsplit("/", 1)[1]], components)
        return {k: _resolve(v, components) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_resolve(v, components) for v in schema]
    return schema


def _check_against_document(spec: dict[str, Any], method: str, path: str, template: str, response: Any) -> None:
    documented = spec["paths"][template][method.lower()]["responses"]
    assert str(response.status_code) in documented, (template, response.status_code)
    content = documented[str(response.status_code)]["content"]
    media = response.headers["content-type"].split(";")[0]
    assert media in content, (template, media)
    if media == "application/json":
        schema = _resolve(content[media]["schema"], spec["components"]["schemas"])
        jsonschema.validate(response.json(), schema)


PROBES = [
    ("GET", "/ready", "/ready"),
    ("GET", "/health", "/health"),
    ("GET", "/v2/health/ready", "/v2/health/ready"),
    ("GET", "/v2/health/live", "/v2/health/live"),
    ("GET", "/v2/models/churn/ready", "/v2/models/{model_name}/ready"),
    ("GET", "/v2/models/other/ready", "/v2/models/{model_name}/ready"),
    ("GET", "/metadata", "/metadata"),
]


def test_responses_match_the_openapi_document_when_ready_and_when_draining(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
        for method, path, template in PROBES:
            _check_against_document(spec, method, path, template, client.request(method, path))
        app.state.draining = True
        for method, path, template in PROBES:
            response = client.request(method, path)
            if template.endswith("ready") and "other" not in path:
                assert response.status_code == 503, path
            _check_against_document(spec, method, path, template, response)


def test_openapi_lists_exactly_the_route_table(client: TestClient) -> None:
    from server.http.routes import ENDPOINTS

    spec = client.get("/openapi.json").json()
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    assert documented == {(e.path, e.method) for e in ENDPOINTS}
    v2_output = spec["components"]["schemas"]["V2Response"]["properties"]["outputs"]["items"]
    n_classes = client.get("/v2/models/churn").json()["outputs"][0]["shape"][1]
    assert f"[N, {n_classes}]" in v2_output["description"]


def test_the_openapi_example_is_a_valid_row_that_is_nobodys(client: TestClient, golden: dict[str, Any]) -> None:
    """Review L10: the example was the first golden row, a real test-set user's features, in an open document."""
    example = client.get("/openapi.json").json()["components"]["schemas"]["ChurnFeatures"]["example"]
    assert all(list(example.values()) != row for row in golden["inputs"])
    assert client.post("/predict", json=example).status_code == 200
