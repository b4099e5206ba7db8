"""Open Inference Protocol V2 over gRPC: its protobuf messages, read and written, framework-free (no grpc here).

The messages come from ``proto/open_inference.proto``, compiled to a descriptor and loaded into a pool of this
module's own: Triton's and KServe's generated modules declare the same ``inference.*`` names in protobuf's default
pool, and a process may hold one of them beside this server's code (a test, a sidecar).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from common.model.loader import ModelInfo
from server.core.errors import V2Error
from server.core.v2 import CONTRIBUTIONS, InferRequest, check_input, check_range

SERVICE = "inference.GRPCInferenceService"
INFER_ROUTE = f"/{SERVICE}/ModelInfer"  # its metrics label: the gRPC method's path

_POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(
    (Path(__file__).parent / "proto" / "open_inference.binpb").read_bytes()
).file:
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
    if len(message.inputs) != 1:
        raise V2Error(f"expected exactly one input tensor named {info.input_name!r}, got {len(message.inputs)}")
    tensor = message.inputs[0]
    shape = check_input(tensor.name, tensor.datatype, list(tensor.shape), info, max_batch)
    count = shape[0] * shape[1]
    typed = tensor.HasField("contents")
    if message.raw_input_contents:
        raw = message.raw_input_contents[0]
        if typed or len(message.raw_input_contents) != 1 or len(raw) != count * 4:
            raise V2Error(
                f"raw_input_contents must hold one tensor of {count * 4} bytes (N x features x 4) and no typed "
                f"contents; got {[len(r) for r in message.raw_input_contents]} bytes"
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
    explain = False
    if "explain" in message.parameters:
        parameter = message.parameters["explain"]
        if parameter.WhichOneof("parameter_choice") != "bool_param":
            raise V2Error("request parameter 'explain' must be a bool_param", 422)
        explain = parameter.bool_param
    names = (info.probability_output, CONTRIBUTIONS)
    for output in message.outputs:
        if output.name not in names:
            raise V2Error(f"unknown output {output.name!r}; the model's outputs are {names[0]!r} and {names[1]!r}")
    return InferRequest(X, message.id or None, explain, frozenset(names))


def grpc_infer_response(
    name: str,
    info: ModelInfo,
    probabilities: npt.NDArray[np.float32],
    request_id: str | None,
    contributions: npt.NDArray[np.float64] | None = None,
    base_value: float = 0.0,
) -> bytes:
    """The serialized ``ModelInferResponse``: every output as raw little-endian FP32 bytes, as Triton answers."""
    response: Any = ModelInferResponse(model_name=name, model_version=info.version, id=request_id or "")
    tensors = [(info.probability_output, probabilities)]
    if contributions is not None:
        tensors.append((CONTRIBUTIONS, contributions.astype(np.float32)))
        response.parameters["base_value"].double_param = base_value
        response.parameters["features"].string_param = ",".join(info.features)
    for output_name, tensor in tensors:
        response.outputs.add(name=output_name, datatype="FP32", shape=tensor.shape)
        response.raw_output_contents.append(tensor.astype("<f4", copy=False).tobytes())
    return bytes(response.SerializeToString())
