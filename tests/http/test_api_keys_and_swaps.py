"""API keys (401 / 403, open probes) and model swaps through POST /admin/model, in-process."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from common.model.loader import load_model
from server.config.keys import hash_key
from server.config.settings import Settings
from server.http.app import PulseApp, create_app
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.http

PREDICT_KEY, ADMIN_KEY, METRICS_KEY = "pk_predict_example", "pk_admin_example", "pk_metrics_example"
PREDICT = {"authorization": f"Bearer {PREDICT_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
METRICS = {"authorization": f"Bearer {METRICS_KEY}"}


@pytest.fixture
def keyed(exported: Path, tmp_path: Path) -> Iterator[tuple[PulseApp, TestClient]]:
    keys = tmp_path / "keys"
    keys.write_text(
        f"{hash_key(PREDICT_KEY)} predict crm\n{hash_key(ADMIN_KEY)} admin ops\n{hash_key(METRICS_KEY)} metrics prom\n"
    )
    # The model folder: this test run's temporary root, which holds every model fixture and this test's folder.
    app = create_app(Settings(model_path=exported, api_keys_file=keys, model_dir=tmp_path.parent))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def test_model_routes_need_a_key_and_probes_stay_open(keyed: tuple[PulseApp, TestClient]) -> None:
    app, client = keyed
    refused = client.post("/predict", json=EXAMPLE_ROW)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert "detail" in refused.json()
    assert client.post("/predict", json=EXAMPLE_ROW, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/predict", json=EXAMPLE_ROW, headers=PREDICT).status_code == 200
    assert client.post("/predict", json=EXAMPLE_ROW, headers=ADMIN).status_code == 200  # admin may predict too
    assert client.get("/metadata").status_code == 401 and client.get("/metadata", headers=PREDICT).status_code == 200
    v2 = client.post("/v2/models/churn/infer", json={"inputs": []})
    assert v2.status_code == 401 and "error" in v2.json()
    for open_path in ("/health", "/ready", "/docs", "/v2", "/v2/health/live", "/v2/health/ready"):
        assert client.get(open_path).status_code == 200, open_path
    assert app.state.metrics.rejected[("unauthorized", 401)] == 4


def test_what_names_the_model_and_the_workers_needs_a_key(keyed: tuple[PulseApp, TestClient]) -> None:
    """/metrics (versions, sha256s, worker pids) needs a ``metrics`` key, what a scraper is given; the OpenAPI
    document (the model's features and limits) a ``predict`` key; neither key opens the other's door."""
    _, client = keyed
    assert client.get("/metrics").status_code == 401 and client.get("/openapi.json").status_code == 401
    assert client.get("/metrics", headers=PREDICT).status_code == 403
    assert client.get("/openapi.json", headers=METRICS).status_code == 403
    assert client.post("/predict", json=EXAMPLE_ROW, headers=METRICS).status_code == 403
    scraped = client.get("/metrics", headers=METRICS)
    assert scraped.status_code == 200 and "pulse_http_requests_total" in scraped.text
    assert client.get("/metrics", headers=ADMIN).status_code == 200
    assert client.get("/openapi.json", headers=PREDICT).json()["openapi"].startswith("3.")


def test_the_docs_can_send_a_key(keyed: tuple[PulseApp, TestClient]) -> None:
    _, client = keyed
    document = client.get("/openapi.json", headers=PREDICT).json()
    assert document["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    assert document["paths"]["/predict"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/health"]["get"]
    assert "401" in document["paths"]["/predict"]["post"]["responses"]


def test_keys_never_reach_the_log(keyed: tuple[PulseApp, TestClient], caplog: pytest.LogCaptureFixture) -> None:
    _, client = keyed
    with caplog.at_level(logging.DEBUG):
        client.post("/predict", json=EXAMPLE_ROW, headers=PREDICT)
        client.post("/predict", json=EXAMPLE_ROW, headers={"authorization": "Bearer not-a-key-1234"})
        client.post("/admin/model", json={"path": "/nowhere"}, headers=ADMIN)
    assert PREDICT_KEY not in caplog.text and "not-a-key-1234" not in caplog.text and ADMIN_KEY not in caplog.text


def test_an_admin_swap_serves_the_new_model_at_once(
    keyed: tuple[PulseApp, TestClient], exported: Path, twin_model: Path
) -> None:
    app, client = keyed
    before = client.post("/predict", json=EXAMPLE_ROW, headers=PREDICT).json()
    assert client.post("/admin/model", json={"path": str(twin_model)}, headers=PREDICT).status_code == 403
    swapped = client.post("/admin/model", json={"path": str(twin_model)}, headers=ADMIN)
    assert swapped.status_code == 200, swapped.text
    twin = load_model(twin_model)
    result = swapped.json()
    assert result["model_version"] == twin.info.version and result["previous_version"] == before["model_version"]
    assert list(result["workers"].values()) == [twin.info.version]
    after = client.post("/predict", json=EXAMPLE_ROW, headers=PREDICT).json()
    row = [[EXAMPLE_ROW[name] for name in twin.info.features]]
    assert after["model_version"] == twin.info.version
    assert np.float32(after["churn_probability"]) == twin.churn_probability(np.asarray(row, dtype=np.float32))[0]
    assert client.get("/ready").json()["model_version"] == twin.info.version
    assert client.get("/metadata", headers=PREDICT).json()["sha256"] == twin.info.sha256
    assert f'version="{twin.info.version}"' in client.get("/metrics", headers=METRICS).text


def test_a_model_that_fails_a_check_is_refused_and_the_old_one_keeps_serving(
    keyed: tuple[PulseApp, TestClient], exported: Path, tmp_path: Path
) -> None:
    _, client = keyed
    version = client.get("/ready").json()["model_version"]
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(exported.read_bytes()[:1000])
    os.mkfifo(tmp_path / "fifo.onnx")  # opening it for reading would wait for a writer for good
    (tmp_path / "outside.onnx").symlink_to("/etc/hostname")
    shutil.copy(exported, tmp_path / "garbled.onnx")
    (tmp_path / "garbled.onnx.sha256").write_bytes(b"\xff\xfe not text")
    unsaid = "no servable model file at that path"  # says nothing of the file: exists? size? hash?
    outside = "not a model file in the model folder"
    for body, fragment in (
        ({"path": str(tmp_path / "missing.onnx")}, unsaid),
        ({"path": str(exported), "sha256": "0" * 64}, unsaid),
        ({"path": str(tmp_path)}, unsaid),
        ({"path": str(tmp_path / "fifo.onnx")}, unsaid),
        ({"path": str(tmp_path / "garbled.onnx")}, unsaid),
        ({"path": str(broken)}, "not a loadable ONNX model"),  # inside the folder: what is wrong with it is said
        ({"path": "/etc/hostname"}, outside),
        ({"path": "/proc/self/environ"}, outside),
        ({"path": str(tmp_path / "outside.onnx")}, outside),  # a symlink out of the folder
        ({"path": str(tmp_path / "a\u0000b.onnx")}, outside),
    ):
        response = client.post("/admin/model", json=body, headers=ADMIN)
        assert response.status_code == 422 and fragment in response.json()["detail"], (body, response.text)
        assert not re.search(r"[0-9a-f]{12}|bytes|does not exist|regular file", response.json()["detail"])
    assert client.post("/admin/model", json={"model": "x"}, headers=ADMIN).status_code == 422
    assert client.get("/ready").json()["model_version"] == version
    assert client.post("/predict", json=EXAMPLE_ROW, headers=PREDICT).json()["model_version"] == version


def test_a_new_input_schema_needs_force(keyed: tuple[PulseApp, TestClient], behaviour_model: Path) -> None:
    _, client = keyed
    refused = client.post("/admin/model", json={"path": str(behaviour_model)}, headers=ADMIN)
    assert refused.status_code == 422 and "force" in refused.json()["detail"]
    forced = client.post("/admin/model", json={"path": str(behaviour_model), "force": True}, headers=ADMIN)
    assert forced.status_code == 200
    features = client.get("/metadata", headers=PREDICT).json()["features"]
    assert features[-1] == "days_since_last_event"


def test_without_keys_http_swaps_are_off(exported: Path, twin_model: Path) -> None:
    with TestClient(create_app(Settings(model_path=exported)), raise_server_exceptions=False) as client:
        response = client.post("/admin/model", json={"path": str(twin_model)})
        assert response.status_code == 403 and "PULSE_API_KEYS_FILE" in response.json()["detail"]


def test_the_request_log_names_the_model_that_scored_each_row(exported: Path, twin_model: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{hash_key(ADMIN_KEY)} admin\n")
    log = tmp_path / "requests.jsonl"
    settings = Settings(model_path=exported, api_keys_file=keys, request_log=log)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        first = client.post("/predict", json=EXAMPLE_ROW, headers=ADMIN).json()["model_version"]
        client.post("/admin/model", json={"path": str(twin_model)}, headers=ADMIN)
        second = client.post("/predict", json=EXAMPLE_ROW, headers=ADMIN).json()["model_version"]
    assert [json.loads(line)["model_version"] for line in log.read_text().splitlines()] == [first, second]
