"""Open Inference Protocol V2 shapes over the same session."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from tests.support import binary_outputs

pytestmark = pytest.mark.http


def _infer(client: TestClient, rows: list[list[float]], **extra: Any) -> Any:
    body = {
        "inputs": [
            {"name": "features", "shape": [len(rows), 5], "datatype": "FP32", "data": [v for row in rows for v in row]}
        ],
        **extra,
    }
    return client.post("/v2/models/churn/infer", json=body)


def test_v2_server_and_health(client: TestClient) -> None:
    assert client.get("/v2").json()["name"] == "ml-pulsechecker"
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/churn/ready").json() == {"name": "churn", "ready": True}


def test_v2_model_metadata(client: TestClient) -> None:
    body = client.get("/v2/models/churn").json()
    assert body["name"] == "churn"
    assert body["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 5]}]
    assert body["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]


def test_v2_infer_matches_predict(client: TestClient, golden: dict[str, Any]) -> None:
    rows = golden["inputs"][:3]
    response = _infer(client, rows, id="req-1")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "req-1" and body["model_name"] == "churn"
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [3, 2] and output["datatype"] == "FP32"
    churn = output["data"][1::2]
    expected = [r["churn_probability"] for r in client.post("/predict", json=golden["rows"][:3]).json()]
    assert churn == pytest.approx(expected, abs=1e-7)


def test_v2_accepts_nested_data(client: TestClient, golden: dict[str, Any]) -> None:
    rows = golden["inputs"][:2]
    body = {"inputs": [{"name": "features", "shape": [2, 5], "datatype": "FP32", "data": rows}]}
    assert client.post("/v2/models/churn/infer", json=body).json()["outputs"][0]["shape"] == [2, 2]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 1, 1, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "INT64", "data": [1, 1, 1, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 1, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 1, "a", 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 1, True, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 1, None, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 1, 10**400, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, -1, 1, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 1e39, 1, 1, 1]}]}, 400),
        ({"inputs": [{"name": "features", "shape": [1000, 5], "datatype": "FP32", "data": [1] * 5000}]}, 413),
        ({"inputs": []}, 400),
        ({"nothing": 1}, 400),
    ],
)
def test_v2_errors_use_the_protocol_shape(client: TestClient, body: Any, status: int) -> None:
    response = client.post("/v2/models/churn/infer", json=body)
    assert response.status_code == status
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/other"),
        ("GET", "/v2/models/other/ready"),
        ("POST", "/v2/models/other/infer"),
        ("GET", "/v2/nothing/here"),
    ],
)
def test_v2_unknown_model_or_path_is_a_protocol_404(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json={})
    assert response.status_code == 404
    assert response.json().keys() == {"error"}


@pytest.mark.parametrize(("method", "path"), [("GET", "/v2/models/churn/infer"), ("POST", "/v2/health/live")])
def test_v2_wrong_method_is_a_protocol_405(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert response.headers["allow"] in ("POST", "GET, HEAD")


def test_v2_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/v2/models/churn/infer", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "error" in response.json()


def _binary_request(rows: list[list[float]], size: int | None = None, **extra: Any) -> tuple[bytes, dict[str, str]]:
    data = np.asarray(rows, dtype="<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [len(rows), 5],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data) if size is None else size},
                }
            ],
            **extra,
        }
    )
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))}
    return header.encode() + data, headers


def test_v2_binary_tensor_extension_matches_json(client: TestClient, golden: dict[str, Any]) -> None:
    rows = golden["inputs"][:4]
    body, headers = _binary_request(rows)
    binary = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert binary.status_code == 200, binary.text
    assert binary.json()["outputs"] == _infer(client, rows).json()["outputs"]


@pytest.mark.parametrize(
    ("parameters", "outputs"),
    [
        ({"binary_data_output": True}, None),
        ({}, [{"name": "probabilities", "parameters": {"binary_data": True}}]),
        ({"binary_data_output": False}, [{"name": "probabilities", "parameters": {"binary_data": True}}]),
    ],
    ids=["every output", "one output", "one output, request says no"],
)
def test_v2_binary_outputs_carry_the_json_answers_bytes(
    client: TestClient, golden: dict[str, Any], parameters: dict[str, Any], outputs: Any
) -> None:
    rows = golden["inputs"][:4]
    body, headers = _binary_request(rows, parameters=parameters, **({"outputs": outputs} if outputs else {}))
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    header, (probabilities,) = binary_outputs(response)
    (output,) = header["outputs"]
    assert "data" not in output and output["shape"] == [4, 2] and output["datatype"] == "FP32"
    expected = _infer(client, rows).json()["outputs"][0]["data"]
    np.testing.assert_array_equal(probabilities.ravel(), np.array(expected, dtype=np.float32))


def test_v2_an_output_can_refuse_binary_when_the_request_asks_for_it(
    client: TestClient, golden: dict[str, Any]
) -> None:
    outputs = [{"name": "probabilities", "parameters": {"binary_data": False}}]
    response = _infer(client, golden["inputs"][:2], parameters={"binary_data_output": True}, outputs=outputs)
    assert (
        response.headers["content-type"] == "application/json"
        and "inference-header-content-length" not in response.headers
    )
    assert response.json()["outputs"][0]["shape"] == [2, 2]


@pytest.mark.parametrize(
    "extra",
    [
        {"parameters": {"binary_data_output": "yes"}},
        {"parameters": [1]},
        {"outputs": [{"name": "probabilities", "parameters": {"binary_data": 1}}]},
        {"outputs": [{"name": "probabilities", "parameters": "binary"}]},
    ],
)
def test_v2_bad_binary_output_parameters_are_a_400(
    client: TestClient, golden: dict[str, Any], extra: dict[str, Any]
) -> None:
    response = _infer(client, golden["inputs"][:1], **extra)
    assert response.status_code == 400 and set(response.json()) == {"error"}


def test_v2_server_metadata_names_the_binary_extension(client: TestClient) -> None:
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


@pytest.mark.parametrize("size", [0, 19, 80])
def test_v2_binary_size_must_match_the_shape(client: TestClient, golden: dict[str, Any], size: int) -> None:
    body, headers = _binary_request(golden["inputs"][:1], size=size)
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 400 and "binary_data_size" in response.json()["error"]


def test_v2_binary_header_length_must_fit(client: TestClient, golden: dict[str, Any]) -> None:
    body, headers = _binary_request(golden["inputs"][:1])
    headers["inference-header-content-length"] = str(len(body) + 1)
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 400 and "does not fit" in response.json()["error"]


def test_v2_binary_values_are_range_checked(client: TestClient) -> None:
    body, headers = _binary_request([[1.0, -1.0, 1.0, 1.0, float("nan")]])
    response = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert response.status_code == 400 and "finite" in response.json()["error"]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_an_unknown_v2_path_answers_in_the_protocols_error_shape_for_any_method(
    client: TestClient, method: str
) -> None:
    """Triton's client calls POST /v2/repository/index and reads ``error`` from what comes back."""
    response = client.request(method, "/v2/repository/index")
    assert response.status_code == 404
    assert response.json() == {"error": "no V2 endpoint at '/v2/repository/index'"}
