"""Open Inference Protocol V2 over gRPC: its protobuf messages, read and written, framework-free (no grpc here).

The messages come from ``proto/open_inference.proto``, compiled to a descriptor and loaded into a pool of this
module's own: Triton's and KServe's generated modules declare the same ``inference.*`` names in protobuf's default
pool, and a process may hold one of them beside this server's code (a test, a sidecar).
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from common.model.loader import ModelInfo
from server.core.access import GRPC_SERVICE
from server.core.errors import V2Error, shown
from server.core.ids import (
    ID_FIELD,
    check_id_tensor,
    check_v2_ids,
    decode_strings,
    encode_strings,
    request_id as checked_request_id,
)
from server.core.v2 import (
    CONTRIBUTIONS,
    InferRequest,
    check_explain,
    check_input,
    check_output,
    check_range,
    output_names,
)

SERVICE = GRPC_SERVICE
INFER_ROUTE = f"/{SERVICE}/ModelInfer"  # its metrics label: the gRPC method's path

# The gRPC status (its code number) each HTTP status the pipeline answers means; the rest of 4xx: INVALID_ARGUMENT.
# A 503 from the pipeline means no model is served yet: UNAVAILABLE; an overload refusal (shed, no memory for the
# message) is RESOURCE_EXHAUSTED, as gRPC's own limits are.
GRPC_STATUS = {200: 0, 401: 16, 403: 7, 404: 5, 413: 8, 500: 13, 503: 14}
INVALID_ARGUMENT, RESOURCE_EXHAUSTED = 3, 8


def grpc_status(http_status: int, overloaded: bool = False) -> int:
    """The gRPC status code a call answered with ``http_status`` ends with."""
    return RESOURCE_EXHAUSTED if overloaded else GRPC_STATUS.get(http_status, INVALID_ARGUMENT)


# The protocol's compiled descriptor (reflection describes the service from it too: server.grpc.services).
PROTO_FILES = tuple(
    descriptor_pb2.FileDescriptorSet.FromString(
        (Path(__file__).parent / "proto" / "open_inference.binpb").read_bytes()
    ).file
)
_POOL = descriptor_pool.DescriptorPool()
for _file in PROTO_FILES:
    _POOL.Add(_file)


def message_class(name: str) -> type[Message]:
    """The class of the protocol's message ``inference.<name>``."""
    found: type[Message] = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"inference.{name}"))
    return found


ModelInferRequest = message_class("ModelInferRequest")
ModelInferResponse = message_class("ModelInferResponse")


def from_dict(name: str, document: dict[str, Any]) -> Message:
    """The message ``name`` holding ``document`` (the JSON the HTTP door answers): one definition for both doors.
    What the message has no field for (the metadata's ``parameters``) stays in the JSON."""
    return json_format.ParseDict(document, message_class(name)(), ignore_unknown_fields=True)


def decode_infer(body: bytes) -> Any:
    """The ``ModelInferRequest`` a gRPC call carries."""
    try:
        return ModelInferRequest.FromString(body)
    except DecodeError:
        raise V2Error("the request is not a ModelInferRequest message") from None


def parse_grpc_infer(message: Any, info: ModelInfo, max_batch: int) -> InferRequest:
    """The request's input tensor, id and explain flag; raise :class:`V2Error` naming what is wrong. The values come
    as ``raw_input_contents`` (little-endian FP32) or as ``contents.fp32_contents``."""
    inputs = message.inputs
    if len(inputs) == 1 and inputs[0].name != ID_FIELD:  # the features alone: most calls
        names, place = (inputs[0].name,), 0
    else:
        names = tuple(tensor.name for tensor in inputs)
        if len(names) != 2 or names[0] == names[1] or ID_FIELD not in names:  # the features and the ids
            raise V2Error(
                f"expected the input tensor {info.input_name!r} (and optionally {ID_FIELD!r}, BYTES), "
                f"got {shown(list(names))}"
            )
        place = 1 - names.index(ID_FIELD)
    tensor = inputs[place]
    shape = check_input(names[place], tensor.datatype, list(tensor.shape), info, max_batch)
    count = shape[0] * shape[1]
    typed = tensor.HasField("contents")
    raw_inputs = message.raw_input_contents
    if raw_inputs and len(raw_inputs) != len(names):
        raise V2Error(f"raw_input_contents must hold one entry per input ({len(names)}), got {len(raw_inputs)}")
    if raw_inputs:
        raw = raw_inputs[place]
        if typed or len(raw) != count * 4:
            raise V2Error(
                f"raw_input_contents must hold the features as {count * 4} bytes (N x features x 4) and no typed "
                f"contents; got {len(raw)} bytes"
            )
        X: npt.NDArray[np.float32] = np.frombuffer(raw, dtype="<f4").reshape(shape)
    elif typed:
        values = tensor.contents.fp32_contents
        others = [field.name for field, _ in tensor.contents.ListFields() if field.name != "fp32_contents"]
        if others or len(values) != count:
            raise V2Error(
                f"input contents must be {count} fp32_contents values and nothing else; got {len(values)}"
                + (f" and {', '.join(others)}" if others else "")
            )
        X = np.array(values, dtype=np.float32).reshape(shape)
    else:
        raise V2Error("the input carries no values: send raw_input_contents or contents.fp32_contents")
    check_range(X, info)
    ids = None
    if len(names) == 2:
        id_place = 1 - place
        ids = check_v2_ids(
            _grpc_ids(message.inputs[id_place], raw_inputs[id_place] if raw_inputs else None, shape[0]), shape[0]
        )
    explain = False
    if "explain" in message.parameters:
        parameter = message.parameters["explain"]
        kind = parameter.WhichOneof("parameter_choice")
        explain = check_explain(getattr(parameter, kind) if kind else None, kind == "bool_param")
    for output in message.outputs:
        check_output(output.name, info)
    return InferRequest(X, checked_request_id(message.id), explain, frozenset(output_names(info)), ids)


def _grpc_ids(tensor: Any, raw: bytes | None, rows: int) -> list[Any]:
    """The ``id`` tensor's strings, from ``contents.bytes_contents`` or its raw (length-prefixed) entry."""
    check_id_tensor(tensor.datatype, list(tensor.shape), rows)
    if raw is not None:
        return decode_strings(raw, rows, "input 'id'")
    try:
        return [value.decode() for value in tensor.contents.bytes_contents]
    except UnicodeDecodeError:
        raise V2Error("input 'id' values must be UTF-8") from None


def grpc_infer_response(
    name: str,
    info: ModelInfo,
    probabilities: npt.NDArray[np.float32],
    request_id: str | None,
    contributions: npt.NDArray[np.float64] | None = None,
    base_value: float = 0.0,
    ids: list[str] | None = None,
) -> bytes:
    """The serialized ``ModelInferResponse``: every output as raw little-endian FP32 bytes, as Triton answers.

    Written straight in protobuf's wire format (fields in number order, as protobuf writes them), from parts
    rendered once per model: building the message object and serializing it cost more than the model call."""
    parts = [_response_head(name, info.version)]
    if request_id:
        parts.append(_field(0x1A, request_id.encode()))
    tensors = [(info.probability_output, probabilities)]
    if contributions is not None:
        tensors.append((CONTRIBUTIONS, contributions.astype(np.float32)))
        parts.append(_field(0x22, _field(0x0A, b"base_value") + _field(0x12, b"\x21" + struct.pack("<d", base_value))))
        parts.append(_features_parameter(info.features))
    for output_name, tensor in tensors:
        parts.append(_output(output_name, "FP32", tensor.shape))
    if ids is not None:
        parts.append(_output(ID_FIELD, "BYTES", (len(ids),)))
    for _, tensor in tensors:
        parts.append(_field(0x32, tensor.astype("<f4", copy=False).tobytes()))
    if ids is not None:
        parts.append(_field(0x32, encode_strings(ids)))
    return b"".join(parts)


_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


def _varint(value: int) -> bytes:
    """``value`` (not negative) as a protobuf varint."""
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes, a message or a packed list) under its one-byte ``tag``."""
    return bytes((tag,)) + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=16)
def _response_head(name: str, version: str) -> bytes:
    """A response's ``model_name`` and ``model_version`` (proto3 leaves an empty string out)."""
    return (_field(0x0A, name.encode()) if name else b"") + (_field(0x12, version.encode()) if version else b"")


@functools.lru_cache(maxsize=16)
def _features_parameter(features: tuple[str, ...]) -> bytes:
    """The ``features`` response parameter (a map entry: key, then an ``InferParameter`` with its string_param)."""
    return _field(0x22, _field(0x0A, b"features") + _field(0x12, _field(0x1A, ",".join(features).encode())))


@functools.lru_cache(maxsize=64)
def _tensor_head(name: str, datatype: str) -> bytes:
    return _field(0x0A, name.encode()) + _field(0x12, datatype.encode())


@functools.lru_cache(maxsize=256)
def _output(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    """One ``outputs`` entry: its name, datatype and packed shape."""
    return _field(0x2A, _tensor_head(name, datatype) + _field(0x1A, b"".join(map(_varint, shape))))
