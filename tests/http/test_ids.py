"""Caller ids: sent beside the features, echoed in the answer, written to the request log; a bad id is a 422."""

from __future__ import annotations

import dataclasses
import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.http.app import create_app


@pytest.fixture(scope="module")
def logged(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Path]:
    log = tmp_path_factory.mktemp("ids") / "requests.jsonl"
    with TestClient(create_app(dataclasses.replace(settings, request_log=log)), raise_server_exceptions=False) as c:
        yield c, log


def _lines(log: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} lines in the request log")


def test_one_row_with_an_id_is_answered_with_it_and_logged(
    logged: tuple[TestClient, Path], golden: dict[str, Any]
) -> None:
    client, log = logged
    before = len(_lines(log, 0))
    plain = client.post("/predict", json=golden["rows"][0]).json()
    answer = client.post("/predict", json={"id": "user-17", **golden["rows"][0]})
    assert answer.status_code == 200
    assert answer.json() == {"id": "user-17", **plain}  # the same answer, with the id first
    assert list(answer.json())[0] == "id"
    line = _lines(log, before + 2)[-1]
    assert line["id"] == "user-17" and line["churn_probability"] == pytest.approx(plain["churn_probability"])
    assert line["churn"] == plain["churn"] and line["threshold"] == plain["threshold"]
    assert line["model_version"] == plain["model_version"]


def test_a_batch_echoes_each_rows_id_and_integers_stay_integers(
    logged: tuple[TestClient, Path], golden: dict[str, Any]
) -> None:
    client, log = logged
    before = len(_lines(log, 0))
    rows = golden["rows"][:3]
    answer = client.post("/predict", json=[{"id": 1, **rows[0]}, rows[1], {"id": "c", **rows[2]}]).json()
    assert [row.get("id") for row in answer] == [1, None, "c"]
    plain = client.post("/predict", json=rows).json()
    assert [{k: v for k, v in row.items() if k != "id"} for row in answer] == plain
    logged_ids = [line.get("id") for line in _lines(log, before + 6)[before : before + 3]]
    assert logged_ids == [1, None, "c"]


def test_columns_take_an_id_list(client: TestClient, golden: dict[str, Any]) -> None:
    rows = golden["rows"][:2]
    columns = {name: [row[name] for row in rows] for name in golden["features"]}
    answer = client.post("/predict", json={"id": ["a", "b"], **columns}).json()
    assert answer["id"] == ["a", "b"]
    assert answer["churn_probability"] == client.post("/predict", json=columns).json()["churn_probability"]


def test_reasons_carry_the_id(client: TestClient, golden: dict[str, Any]) -> None:
    answer = client.post("/predict?explain=2", json={"id": "x", **golden["rows"][0]}).json()
    assert answer["id"] == "x" and len(answer["reasons"]) == 2


@pytest.mark.parametrize(
    ("ident", "kind"),
    [
        (True, "id_type"),
        (1.5, "id_type"),
        ({"a": 1}, "id_type"),
        ("", "id_length"),
        ("x" * 257, "id_length"),
        (2**64, "id_type"),  # orjson reads an integer past 64 bits as a float
    ],
)
def test_a_bad_id_is_a_422_naming_it(client: TestClient, golden: dict[str, Any], ident: Any, kind: str) -> None:
    response = client.post("/predict", json={"id": ident, **golden["rows"][0]})
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(["body", "id"], kind)]
    response = client.post("/predict", json=[golden["rows"][0], {"id": ident, **golden["rows"][1]}])
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(["body", 1, "id"], kind)]


def test_a_bad_id_and_a_bad_feature_are_both_named(client: TestClient, golden: dict[str, Any]) -> None:
    row = {**golden["rows"][0], "id": False, golden["features"][0]: -5}
    errors = client.post("/predict", json=row).json()["detail"]
    assert {tuple(e["loc"]) for e in errors} == {("body", "id"), ("body", golden["features"][0])}


def test_an_id_list_of_another_length_is_a_422(client: TestClient, golden: dict[str, Any]) -> None:
    columns = {name: [golden["rows"][0][name]] for name in golden["features"]}
    response = client.post("/predict", json={"id": ["a", "b"], **columns})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "id"]


def _v2(golden: dict[str, Any], n: int, ids: Any, **extra: Any) -> dict[str, Any]:
    features = {
        "name": "features",
        "datatype": "FP32",
        "shape": [n, len(golden["features"])],
        "data": golden["inputs"][:n],
    }
    return {
        "id": "req-1",
        "inputs": [features, {"name": "id", "datatype": "BYTES", "shape": [n], "data": ids}],
        **extra,
    }


def test_v2_takes_an_id_tensor_and_answers_an_id_output(
    logged: tuple[TestClient, Path], golden: dict[str, Any]
) -> None:
    client, log = logged
    before = len(_lines(log, 0))
    answer = client.post("/v2/models/churn/infer", json=_v2(golden, 2, ["u1", "u2"])).json()
    assert answer["id"] == "req-1"
    assert answer["outputs"][-1] == {"name": "id", "datatype": "BYTES", "shape": [2], "data": ["u1", "u2"]}
    lines = _lines(log, before + 2)[before:]
    # The request's own id once, on its first row's line, with how many lines are its: never copied per row.
    assert [(line["id"], line.get("request_id"), line.get("request_rows")) for line in lines] == [
        ("u1", "req-1", 2),
        ("u2", None, None),
    ]


def test_v2_binary_ids_in_and_out(client: TestClient, golden: dict[str, Any]) -> None:
    rows = golden["inputs"][:2]
    values = struct.pack(f"<{2 * len(golden['features'])}f", *[v for row in rows for v in row])
    ids = b"".join(struct.pack("<I", len(s)) + s for s in (b"alpha", "bêta".encode()))
    header = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": [2, len(golden["features"])],
                "parameters": {"binary_data_size": len(values)},
            },
            {"name": "id", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(ids)}},
        ],
        "outputs": [{"name": "probabilities"}, {"name": "id", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    response = client.post(
        "/v2/models/churn/infer",
        content=head + values + ids,
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    document = json.loads(response.content[:length])
    assert document["outputs"][-1]["parameters"] == {"binary_data_size": len(ids)}
    assert response.content[length:] == ids  # the same strings, framed the same way


@pytest.mark.parametrize(
    ("ids", "shape", "message"),
    [(["a"], [2], "one id per row"), (["a", 5], [2], "value 1 must be a string"), (["a", "b"], [2, 2], "shape [2]")],
)
def test_v2_bad_ids_are_the_protocols_400(
    client: TestClient, golden: dict[str, Any], ids: list[Any], shape: list[int], message: str
) -> None:
    body = _v2(golden, 2, ids)
    body["inputs"][1]["shape"] = shape
    response = client.post("/v2/models/churn/infer", json=body)
    assert response.status_code == 400 and message in response.json()["error"]


def test_a_v2_input_named_by_something_else_than_a_string_is_a_400(client: TestClient, golden: dict[str, Any]) -> None:
    # Inputs are looked up by name since the id tensor came: an unhashable name once made this a 500.
    body = _v2(golden, 1, ["a"])
    body["inputs"][0]["name"] = {}
    response = client.post("/v2/models/churn/infer", json=body)
    assert response.status_code == 400 and "by name" in response.json()["error"]


@pytest.mark.parametrize("length, status", [(256, 200), (257, 400), (5_000, 400)])
def test_the_v2_request_id_is_bounded_like_a_row_id(
    client: TestClient, golden: dict[str, Any], length: int, status: int
) -> None:
    response = client.post("/v2/models/churn/infer", json={**_v2(golden, 1, ["u1"]), "id": "r" * length})
    assert response.status_code == status, response.text
    if status == 400:
        assert "256 characters" in response.json()["error"] and len(response.content) < 200


def test_the_grpc_request_id_is_bounded_too(golden: dict[str, Any], exported: Path) -> None:
    from common.model.loader import load_model
    from server.core.errors import V2Error
    from server.core.v2_grpc import ModelInferRequest, parse_grpc_infer

    info = load_model(exported).info
    for length, refused in ((256, False), (257, True)):
        message: Any = ModelInferRequest(model_name="churn", id="r" * length)
        message.inputs.add(name="features", datatype="FP32", shape=[1, len(info.features)])
        message.inputs[0].contents.fp32_contents.extend(golden["inputs"][0])
        if refused:
            with pytest.raises(V2Error, match="256 characters"):
                parse_grpc_infer(message, info, 10)
        else:
            assert parse_grpc_infer(message, info, 10).id == "r" * 256


def test_a_requests_log_grows_with_its_rows_not_with_its_id(
    logged: tuple[TestClient, Path], golden: dict[str, Any]
) -> None:
    """Review H2: a request id copied into every row's line made a 44 KB request write 20 MB of log."""
    client, log = logged
    rows = 50
    grown = []
    for request_id in ("r", "r" * 256):
        before = log.stat().st_size if log.exists() else 0
        lines_before = len(_lines(log, 0)) if log.exists() else 0
        body = {**_v2(golden, rows, [f"u{i}" for i in range(rows)]), "id": request_id}
        body["inputs"][0]["data"] = (golden["inputs"] * rows)[:rows]
        assert client.post("/v2/models/churn/infer", json=body).status_code == 200
        _lines(log, lines_before + rows)
        grown.append(log.stat().st_size - before)
    assert grown[1] - grown[0] == 255  # the longer request id, once for the 50 rows


def test_a_null_id_means_no_id_in_every_shape(client: TestClient, golden: dict[str, Any]) -> None:
    """Review L11: ``"id": null`` was accepted on a batch row and a 422 on a single row or in a column list."""
    row = golden["rows"][0]
    plain = client.post("/predict", json=row).json()
    assert client.post("/predict", json={"id": None, **row}).json() == plain
    assert client.post("/predict", json=[{"id": None, **row}]).json() == [plain]
    columns = {name: [row[name], row[name]] for name in golden["features"]}
    answer = client.post("/predict", json={"id": [None, "b"], **columns})
    assert answer.status_code == 200 and answer.json()["id"] == [None, "b"]
