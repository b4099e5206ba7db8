"""The gRPC door's messages: the committed descriptor is what protoc makes of the committed .proto, and a
``ModelInferRequest`` is read as strictly as the HTTP JSON (the same checks, the same messages)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.model.loader import ModelInfo
from server.config.settings import Settings, SettingsError
from server.core.errors import V2Error
from server.core.v2_grpc import (
    ModelInferRequest,
    ModelInferResponse,
    decode_infer,
    from_dict,
    grpc_infer_response,
    message_class,
    parse_grpc_infer,
)

PROTO = Path(__file__).resolve().parents[2] / "server" / "core" / "proto"


def test_the_committed_descriptor_is_the_compiled_proto(tmp_path: Path) -> None:
    out = tmp_path / "open_inference.binpb"
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO}", f"--descriptor_set_out={out}"]
    subprocess.run([*command, str(PROTO / "open_inference.proto")], check=True, capture_output=True)
    assert out.read_bytes() == (PROTO / "open_inference.binpb").read_bytes(), "regenerate: see the .proto's header"


def _info() -> ModelInfo:
    names = ("a", "b", "c")
    return ModelInfo(
        feature_set="test",
        features=names,
        minimums=(0.0, 0.0, 0.0),
        descriptions=names,
        units=("", "", ""),
        threshold=0.5,
        version="rf-test",
        trained_at="",
        sha256="",
        size_bytes=0,
        input_name="features",
        probability_output="probabilities",
        positive_index=1,
        test_metrics={},
        node_count=None,
        example={},
    )


def _request(X: np.ndarray, raw: bool = True, **fields: Any) -> Any:
    message: Any = ModelInferRequest(model_name="churn", id=fields.pop("id", ""))
    tensor = message.inputs.add(name=fields.pop("name", "features"), datatype=fields.pop("datatype", "FP32"))
    tensor.shape.extend(fields.pop("shape", X.shape))
    if raw:
        message.raw_input_contents.append(X.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(X.reshape(-1).tolist())
    for key, value in fields.pop("parameters", {}).items():
        setattr(message.parameters[key], *value)
    for name in fields.pop("outputs", ()):
        message.outputs.add(name=name)
    assert not fields
    return message


@pytest.mark.parametrize("raw", [True, False])
def test_raw_and_typed_contents_give_the_same_rows(raw: bool) -> None:
    info = _info()
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    message = decode_infer(_request(X, raw=raw, id="a-1").SerializeToString())
    request = parse_grpc_infer(message, info, max_batch=10)
    np.testing.assert_array_equal(request.X, X)
    assert request.id == "a-1" and request.explain is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shape": [2, 4]}, "input shape must be [N, 3]"),
        ({"datatype": "FP64"}, "input datatype must be 'FP32'"),
        ({"name": "x"}, "unknown input 'x'"),
        ({"parameters": {"explain": ("string_param", "yes")}}, "'explain' must be true or false, got 'yes'"),
        ({"outputs": ["nope"]}, "unknown output 'nope'"),
    ],
)
def test_a_bad_request_is_a_v2_error_naming_what_is_wrong(change: dict[str, Any], message: str) -> None:
    X = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(V2Error, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_grpc_infer(_request(X, **change), _info(), max_batch=10)


def test_sizes_values_and_bytes_are_checked() -> None:
    info, X = _info(), np.ones((2, 3), dtype=np.float32)
    with pytest.raises(V2Error, match="not a ModelInferRequest"):
        decode_infer(b"\xff\xff\xff")
    short = _request(X)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    with pytest.raises(V2Error, match="raw_input_contents must hold the features as 24 bytes"):
        parse_grpc_infer(short, info, max_batch=10)
    both = _request(X)
    both.inputs[0].contents.fp32_contents.extend([1.0] * 6)
    with pytest.raises(V2Error, match="no typed contents"):
        parse_grpc_infer(both, info, max_batch=10)
    with pytest.raises(V2Error, match="exceeds the limit of 1") as too_many:
        parse_grpc_infer(_request(X), info, max_batch=1)
    assert too_many.value.status_code == 413
    with pytest.raises(V2Error, match="must be >= 0"):
        parse_grpc_infer(_request(-X), info, max_batch=10)
    with pytest.raises(V2Error, match="finite float32"):
        parse_grpc_infer(_request(X * np.float32("nan")), info, max_batch=10)


def test_the_response_carries_raw_outputs_and_the_id() -> None:
    info = _info()
    probabilities = np.array([[0.25, 0.75]], dtype=np.float32)
    response: Any = ModelInferResponse.FromString(grpc_infer_response("churn", info, probabilities, "x-9"))
    assert response.id == "x-9" and response.model_version == info.version
    assert [o.name for o in response.outputs] == [info.probability_output] and list(response.outputs[0].shape) == [1, 2]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"), probabilities.reshape(-1))


def _protobuf_response(
    info: ModelInfo, probabilities: np.ndarray, request_id: str, contributions: Any, ids: Any
) -> Any:
    """The response as protobuf's own message classes build it: what the door's wire-format writer must match."""
    message: Any = ModelInferResponse(model_name="churn", model_version=info.version, id=request_id)
    tensors = [(info.probability_output, probabilities)]
    if contributions is not None:
        tensors.append(("contributions", contributions.astype(np.float32)))
        message.parameters["base_value"].double_param = 0.125
        message.parameters["features"].string_param = ",".join(info.features)
    for name, tensor in tensors:
        message.outputs.add(name=name, datatype="FP32", shape=tensor.shape)
        message.raw_output_contents.append(tensor.astype("<f4").tobytes())
    if ids is not None:
        message.outputs.add(name="id", datatype="BYTES", shape=[len(ids)])
        message.raw_output_contents.append(b"".join(len(i.encode()).to_bytes(4, "little") + i.encode() for i in ids))
    return message


@pytest.mark.parametrize("rows", [1, 127, 128, 1000, 20_000])  # shapes whose varints take one, two and three bytes
@pytest.mark.parametrize("request_id", ["", "x-9", "é" * 200])
@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("explained", [False, True])
def test_the_written_response_is_the_message_protobuf_writes(
    rows: int, request_id: str, with_ids: bool, explained: bool
) -> None:
    info, generator = _info(), np.random.default_rng(rows)
    probabilities = generator.random((rows, 2), dtype=np.float32)
    contributions = generator.random((rows, 3)) if explained else None
    ids = [f"u{i}" for i in range(rows)] if with_ids else None
    written = grpc_infer_response("churn", info, probabilities, request_id, contributions, 0.125, ids)
    expected = _protobuf_response(info, probabilities, request_id, contributions, ids)
    assert ModelInferResponse.FromString(written) == expected
    if not explained:  # a map's entries may come in any order; everything else is in field-number order
        assert written == expected.SerializeToString()


def test_the_inputs_are_the_features_and_at_most_the_ids() -> None:
    info, X = _info(), np.ones((2, 3), dtype=np.float32)
    only_ids = _request(X, name="id")
    expected = r"expected the input tensor 'features' \(and optionally 'id', BYTES\), got \['id'\]"
    with pytest.raises(V2Error, match=expected):
        parse_grpc_infer(only_ids, info, max_batch=10)
    twice = _request(X)
    twice.inputs.add(name="features", datatype="FP32", shape=[2, 3])
    with pytest.raises(V2Error, match=r"got \['features', 'features'\]"):
        parse_grpc_infer(twice, info, max_batch=10)
    with pytest.raises(V2Error, match=r"got \[\]"):
        parse_grpc_infer(ModelInferRequest(model_name="churn"), info, max_batch=10)
    with_ids = _request(X)
    with_ids.inputs.add(name="id", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"a", b"b"])
    with_ids.ClearField("raw_input_contents")
    with_ids.inputs[0].contents.fp32_contents.extend([1.0] * 6)
    assert parse_grpc_infer(with_ids, info, max_batch=10).ids == ["a", "b"]


@pytest.mark.parametrize("rows", [1, 4, 5, 300])  # checked value by value up to SMALL_BATCH rows, as arrays above
@pytest.mark.parametrize(
    ("value", "message"),
    [(-1.0, "row {row} feature 'c' must be >= 0"), (np.inf, "finite float32"), (np.nan, "finite float32")],
)
def test_every_batch_size_is_held_to_the_same_range(rows: int, value: float, message: str) -> None:
    info, X = _info(), np.ones((rows, 3), dtype=np.float32)
    assert parse_grpc_infer(_request(X), info, max_batch=1000).X.shape == (rows, 3)
    X[rows - 1, 2] = value
    with pytest.raises(V2Error, match=message.format(row=rows - 1)):
        parse_grpc_infer(_request(X), info, max_batch=1000)
    X[rows - 1, 2] = np.float32(1e-45)  # the smallest float32 above the minimum: in range at every size
    parse_grpc_infer(_request(X), info, max_batch=1000)
    X[rows - 1, 2] = np.float32(0.1)  # below 0.1 as a double, equal to it as a float32: the minimum as sent
    parse_grpc_infer(_request(X), dataclasses.replace(info, minimums=(0.0, 0.0, 0.1)), max_batch=1000)


def test_metadata_is_built_from_the_http_documents() -> None:
    built: Any = from_dict("ServerMetadataResponse", {"name": "n", "version": "1", "extensions": ["e"], "x": 1})
    assert (built.name, list(built.extensions)) == ("n", ["e"])
    assert message_class("ModelConfigResponse")().DESCRIPTOR.full_name == "inference.ModelConfigResponse"


def test_the_grpc_port_setting() -> None:
    assert Settings.from_strings({}).grpc_port is None
    assert Settings.from_strings({"grpc_port": "8001"}).grpc_port == 8001
    assert Settings.from_strings({"grpc_port": ""}).grpc_port is None
    with pytest.raises(SettingsError, match="PULSE_GRPC_PORT has value '70000'"):
        Settings.from_strings({"grpc_port": "70000"})
