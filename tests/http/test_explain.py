"""``/predict?explain=K`` and V2 ``explain``: reasons that add up, in order, refused with a 422 when wrong."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.http.app import create_app
from tests.support import BEHAVIOUR_ROW, binary_outputs

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def explained(behaviour_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_path=behaviour_model))) as client:
        yield client


def _rows(client: TestClient) -> list[dict[str, float]]:
    features = client.get("/metadata").json()["features"]
    golden = json.loads((Path(client.app.state.settings.model_path).parent / "golden_rows.json").read_text())  # type: ignore[attr-defined]
    return [dict(zip(features, row, strict=True)) for row in golden["inputs"]]


def test_reasons_are_the_k_largest_and_all_contributions_add_up(explained: TestClient) -> None:
    rows = _rows(explained)
    n_features = len(rows[0])
    full = explained.post(f"/predict?explain={n_features}", json=rows).json()
    top = explained.post("/predict?explain=2", json=rows).json()
    plain = explained.post("/predict", json=rows).json()
    for everything, two, result in zip(full, top, plain, strict=True):
        assert {k: everything[k] for k in result} == result  # the plain fields are unchanged
        contributions = [r["contribution"] for r in everything["reasons"]]
        assert sorted(r["feature"] for r in everything["reasons"]) == sorted(rows[0])
        assert abs(everything["base_value"] + sum(contributions) - everything["churn_probability"]) <= 1e-6
        magnitudes = [abs(c) for c in contributions]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert two["reasons"] == everything["reasons"][:2]


def test_one_row_gets_one_object_with_reasons_and_its_values(explained: TestClient) -> None:
    body = explained.post("/predict?explain=1", json=BEHAVIOUR_ROW).json()
    (reason,) = body["reasons"]
    assert reason["value"] == BEHAVIOUR_ROW[reason["feature"]]
    assert set(body) == {"churn_probability", "churn", "threshold", "model_version", "base_value", "reasons"}


def test_without_explain_the_response_is_byte_for_byte_the_plain_one(explained: TestClient) -> None:
    plain = explained.post("/predict", json=BEHAVIOUR_ROW).content
    assert explained.post("/predict?unrelated=1", json=BEHAVIOUR_ROW).content == plain


@pytest.mark.parametrize("value", ["0", "7", "-1", "two", "", "1.5", "1&explain=2"])
def test_a_bad_explain_is_a_422_naming_the_parameter(explained: TestClient, value: str) -> None:
    response = explained.post(f"/predict?explain={value}", json=BEHAVIOUR_ROW)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "explain"] and error["type"] == "int_range"


def _v2(client: TestClient, rows: list[dict[str, float]], parameters: Any) -> Any:
    data = [list(row.values()) for row in rows]
    body = {
        "inputs": [{"name": "features", "shape": [len(data), len(data[0])], "datatype": "FP32", "data": data}],
        "parameters": parameters,
    }
    return client.post("/v2/models/churn/infer", json=body)


def test_v2_explain_adds_a_contributions_tensor_that_adds_up(explained: TestClient) -> None:
    rows = _rows(explained)[:4]
    response = _v2(explained, rows, {"explain": True})
    assert response.status_code == 200, response.text
    body = response.json()
    probabilities, contributions = body["outputs"]
    assert contributions["name"] == "contributions" and contributions["shape"] == [4, len(rows[0])]
    phi = np.asarray(contributions["data"]).reshape(4, -1)
    churn = np.asarray(probabilities["data"]).reshape(4, -1)[:, 1]
    assert np.max(np.abs(body["parameters"]["base_value"] + phi.sum(axis=1) - churn)) <= 1e-6
    assert body["parameters"]["features"] == list(rows[0])
    assert len(_v2(explained, rows, {"explain": False}).json()["outputs"]) == 1


def test_v2_explain_with_binary_outputs_sends_both_tensors_as_bytes(explained: TestClient) -> None:
    rows = _rows(explained)[:4]
    json_body = _v2(explained, rows, {"explain": True}).json()
    header, (probabilities, contributions) = binary_outputs(
        _v2(explained, rows, {"explain": True, "binary_data_output": True})
    )
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "contributions"]
    assert header["parameters"] == json_body["parameters"]
    for tensor, output in zip((probabilities, contributions), json_body["outputs"], strict=True):
        np.testing.assert_array_equal(tensor.ravel(), np.array(output["data"], dtype=np.float32))


def test_v2_bad_explain_is_a_422(explained: TestClient) -> None:
    response = _v2(explained, _rows(explained)[:1], {"explain": "yes"})
    assert response.status_code == 422 and "explain" in response.json()["error"]


def test_a_model_without_covers_is_served_and_says_why_it_cannot_explain(behaviour_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    shutil.copy(behaviour_model, path)
    model = onnx.load(str(path))
    kept = {p.key: p.value for p in model.metadata_props if p.key not in ("tree_covers", "golden_shap")}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, kept)
    onnx.save(model, str(path))
    with TestClient(create_app(Settings(model_path=path))) as client:
        assert client.post("/predict", json=BEHAVIOUR_ROW).status_code == 200
        explanations = client.get("/metadata").json()["explanations"]
        assert explanations["available"] is False and "tree_covers" in explanations["reason"]
        response = client.post("/predict?explain=1", json=BEHAVIOUR_ROW)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "explain"]
        assert _v2(client, [BEHAVIOUR_ROW], {"explain": True}).status_code == 422


def test_the_request_log_records_the_top_reason(behaviour_model: Path, tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    settings = dataclasses.replace(Settings(model_path=behaviour_model), request_log=log)
    with TestClient(create_app(settings)) as client:
        reasons = client.post("/predict?explain=1", json=[BEHAVIOUR_ROW, BEHAVIOUR_ROW]).json()
        client.post("/predict", json=BEHAVIOUR_ROW)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line.get("top_reason") for line in lines] == [r["reasons"][0]["feature"] for r in reasons] + [None]


def test_openapi_documents_explain(explained: TestClient) -> None:
    spec = explained.get("/openapi.json").json()
    (parameter,) = spec["paths"]["/predict"]["post"]["parameters"]
    assert parameter["name"] == "explain" and parameter["schema"]["maximum"] == len(BEHAVIOUR_ROW)
    prediction = spec["components"]["schemas"]["Prediction"]["properties"]
    assert {"base_value", "reasons"} <= set(prediction)
    assert "explain" in spec["components"]["schemas"]["V2Request"]["properties"]["parameters"]["properties"]
