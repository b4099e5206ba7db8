"""Open Inference Protocol V2 (KServe / Triton / MLServer): the request and response documents, framework-free."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.model.loader import ModelInfo
from server.core.errors import V2Error, shown
from server.core.ids import (
    ID_FIELD,
    check_id_tensor,
    check_v2_ids,
    decode_strings,
    encode_strings,
    request_id as checked_request_id,
)
from server.core.served import ServedModel
from server.core.validation import FLOAT32_MAX, NUMBERS

PLATFORM = "onnxruntime_onnx"
SERVER_METADATA = {"name": "ml-pulsechecker", "version": "1", "extensions": ["binary_tensor_data"]}
INFER_ROUTE = "/v2/models/{model_name}/infer"  # its metrics label, as the route table names it


def model_metadata(name: str, info: ModelInfo, n_outputs: int) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [info.version],
        "platform": PLATFORM,
        "inputs": [{"name": info.input_name, "datatype": "FP32", "shape": [-1, len(info.features)]}],
        "outputs": [{"name": info.probability_output, "datatype": "FP32", "shape": [-1, n_outputs]}],
        "parameters": {
            "features": list(info.features),
            "threshold": info.threshold,
            "positive_class_index": info.positive_index,
        },
    }


def model_config(name: str, info: ModelInfo, n_outputs: int) -> dict[str, Any]:
    """The model's configuration in the shape Triton serves it (``ModelConfig`` of its model_config.proto, as JSON):
    what Triton's clients and perf_analyzer read at connect time. The batch is the first of ``dims``."""
    return {
        "name": name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": 0,
        "input": [{"name": info.input_name, "data_type": "TYPE_FP32", "dims": [-1, len(info.features)]}],
        "output": [{"name": info.probability_output, "data_type": "TYPE_FP32", "dims": [-1, n_outputs]}],
        "parameters": {
            "features": {"string_value": ",".join(info.features)},
            "threshold": {"string_value": repr(info.threshold)},
            "positive_class_index": {"string_value": str(info.positive_index)},
        },
    }


def served_or_error(served: ServedModel | None, served_name: str, name: str, version: str | None) -> ServedModel:
    """The served model when a request names it (and its version, if it names one); else the protocol's error."""
    if name != served_name:
        raise V2Error(f"model {shown(name)} not found; this server serves {served_name!r}", 404)
    if served is None:
        raise V2Error("model not loaded yet", 503)
    if version and version != served.info.version:
        raise V2Error(f"model {shown(name)} has no version {shown(version)}; it serves {served.info.version!r}", 404)
    return served


def _flatten(data: list[Any], n_rows: int, n_features: int) -> list[Any]:
    if len(data) == n_rows and all(type(row) is list for row in data):
        flat = [value for row in data for value in row]
    else:
        flat = data
    if len(flat) != n_rows * n_features:
        raise V2Error(f"input data has {len(flat)} values, shape {[n_rows, n_features]} needs {n_rows * n_features}")
    return flat


CONTRIBUTIONS = "contributions"


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~3x, once per request
class InferRequest:
    X: npt.NDArray[np.float32]
    id: Any
    explain: bool  # the request parameter "explain": add the SHAP contributions output
    binary_outputs: frozenset[str]  # outputs to answer as raw bytes after the JSON (the binary tensor extension)
    ids: list[str] | None = None  # the ``id`` input: the caller's id of each row, echoed as the ``id`` output


def output_names(info: ModelInfo) -> tuple[str, str, str]:
    """The outputs a request may ask for, in the order they are answered."""
    return (info.probability_output, CONTRIBUTIONS, ID_FIELD)


def check_output(name: Any, info: ModelInfo, shown_as: Any = None) -> str:
    """``name`` when it is one of the model's outputs; else the V2 error naming them (quoting ``shown_as`` when
    given: the JSON encoding quotes the whole output object)."""
    names = output_names(info)
    if name not in names:
        quoted = shown(name if shown_as is None else shown_as)
        raise V2Error(f"unknown output {quoted}; the model's outputs are {', '.join(map(repr, names))}")
    return str(name)


def check_explain(value: Any, given: bool) -> bool:
    """The ``explain`` request parameter, from either encoding (``given``: it has the bool type there)."""
    if not given:
        raise V2Error(f"request parameter 'explain' must be true or false, got {shown(value)}", 422)
    return bool(value)


def parse_infer_request(body: Any, info: ModelInfo, max_batch: int, binary: bytes | None = None) -> InferRequest:
    """The input tensor, the request id and the explain flag; raise :class:`V2Error` naming what is wrong.

    With ``binary`` (the binary tensor extension: the bytes after the JSON header), the input's values are those
    little-endian FP32 bytes, announced by ``parameters.binary_data_size``, instead of a JSON ``data`` list.
    """
    if type(body) is not dict or type(body.get("inputs")) is not list:
        raise V2Error("request must be an object with an 'inputs' list")
    tensor, id_tensor = _inputs(body["inputs"], info)
    shape = check_input(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"), info, max_batch)
    parameters = body.get("parameters") or {}
    if type(parameters) is not dict:
        raise V2Error(f"request 'parameters' must be an object, got {shown(parameters)}")
    explain = parameters.get("explain", False)
    explain = check_explain(explain, type(explain) is bool)
    all_binary = parameters.get("binary_data_output", False)
    if type(all_binary) is not bool:
        raise V2Error(f"request parameter 'binary_data_output' must be true or false, got {shown(all_binary)}")
    outputs = body.get("outputs") or []
    if type(outputs) is not list:
        raise V2Error(f"'outputs' must be a list of objects naming outputs, got {shown(outputs)}")
    request_id = checked_request_id(body.get("id"))
    binary_outputs = set(output_names(info)) if all_binary else set()
    for output in outputs:
        check_output(output.get("name") if type(output) is dict else None, info, shown_as=output)
        output_parameters = output.get("parameters") or {}
        wanted = output_parameters.get("binary_data", all_binary) if type(output_parameters) is dict else None
        if type(wanted) is not bool:
            raise V2Error(f"output parameter 'binary_data' must be true or false, got {shown(wanted)}")
        if wanted:
            binary_outputs.add(output["name"])
        else:
            binary_outputs.discard(output["name"])
    chunks = _binary_chunks(body["inputs"], binary) if binary is not None else {}
    X: npt.NDArray[np.floating[Any]]
    if tensor["name"] in chunks:
        X = _binary_values(tensor, shape, chunks[tensor["name"]])
    else:
        X = _json_values(tensor, shape)
    check_range(X, info)
    ids = None
    if id_tensor is not None:
        ids = check_v2_ids(_id_values(id_tensor, shape[0], chunks.get(ID_FIELD)), shape[0])
    return InferRequest(X.astype(np.float32, copy=False), request_id, explain, frozenset(binary_outputs), ids)


def _inputs(inputs: list[Any], info: ModelInfo) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The features tensor, and the optional ``id`` tensor (one caller id per row)."""
    if not inputs or len(inputs) > 2 or not all(type(t) is dict and type(t.get("name")) is str for t in inputs):
        raise V2Error(f"expected the input tensor {info.input_name!r} (and optionally {ID_FIELD!r}, BYTES), by name")
    by_name = {tensor.get("name"): tensor for tensor in inputs}
    id_tensor = by_name.pop(ID_FIELD, None)
    if len(by_name) != 1 or len(by_name) + (id_tensor is not None) != len(inputs):  # one of each, no repeats
        raise V2Error(f"expected the input tensor {info.input_name!r} (and optionally {ID_FIELD!r}, BYTES)")
    return next(iter(by_name.values())), id_tensor


def _binary_chunks(inputs: list[dict[str, Any]], binary: bytes) -> dict[str, bytes]:
    """Each binary input's bytes: the inputs that announce ``binary_data_size`` take theirs in input order."""
    chunks, at = {}, 0
    for tensor in inputs:
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if type(parameters) is dict else None
        if size is None:
            continue
        if type(size) is not int or size < 0 or at + size > len(binary):
            raise V2Error(
                f"input {shown(tensor.get('name'))} binary_data_size {shown(size)} does not fit the {len(binary)} bytes"
            )
        chunks[tensor["name"]] = binary[at : at + size]
        at += size
    if at != len(binary):
        raise V2Error(f"the binary data holds {len(binary)} bytes; the inputs' binary_data_size announce {at}")
    return chunks


def _id_values(tensor: dict[str, Any], rows: int, binary: bytes | None) -> list[Any]:
    """The ``id`` tensor's strings: BYTES, shape ``[N]`` or ``[N, 1]``, as JSON data or binary."""
    check_id_tensor(tensor.get("datatype"), tensor.get("shape"), rows)
    if binary is not None:
        return decode_strings(binary, rows, "input 'id'")
    data = tensor.get("data")
    if type(data) is not list:
        raise V2Error("input 'id' 'data' must be a list of strings")
    if len(data) == rows and all(type(item) is list and len(item) == 1 for item in data):
        data = [item[0] for item in data]
    return data


def check_input(name: object, datatype: object, shape: object, info: ModelInfo, max_batch: int) -> list[int]:
    """The one input tensor's shape, its name, type and shape checked, whichever encoding carried them (JSON or
    protobuf)."""
    if name != info.input_name:
        raise V2Error(f"unknown input {shown(name)}; the model's input is {info.input_name!r}")
    if datatype != "FP32":
        raise V2Error(f"input datatype must be 'FP32', got {shown(datatype)}")
    n_features = len(info.features)
    if (
        type(shape) is not list
        or len(shape) != 2
        or not all(type(d) is int for d in shape)
        or shape[1] != n_features
        or shape[0] < 1
    ):
        raise V2Error(f"input shape must be [N, {n_features}] with N >= 1, got {shown(shape)}")
    if shape[0] > max_batch:
        raise V2Error(f"batch of {shape[0]} rows exceeds the limit of {max_batch}", 413)
    return shape


def _json_values(tensor: dict[str, Any], shape: list[int]) -> npt.NDArray[np.float64]:
    data = tensor.get("data")
    if type(data) is not list:
        raise V2Error("input 'data' must be a list of numbers")
    flat = _flatten(data, shape[0], shape[1])
    if not set(map(type, flat)) <= NUMBERS:
        raise V2Error("input data must contain numbers only")
    try:
        return np.array(flat, dtype=np.float64).reshape(shape)
    except OverflowError:
        raise V2Error("input data must be finite float32 numbers") from None


def _binary_values(tensor: dict[str, Any], shape: list[int], binary: bytes) -> npt.NDArray[np.float32]:
    parameters = tensor.get("parameters")
    size = parameters.get("binary_data_size") if type(parameters) is dict else None
    expected = shape[0] * shape[1] * 4
    if "data" in tensor or size != len(binary) or size != expected:
        raise V2Error(
            f"binary input must carry parameters.binary_data_size = {expected} (N x features x 4 bytes) "
            f"and no 'data'; got binary_data_size {shown(size)} and {len(binary)} bytes"
        )
    return np.frombuffer(binary, dtype="<f4").reshape(shape)


SMALL_BATCH = 4  # rows checked one by one in Python: below this, numpy's per-call overhead costs more than the loop


def check_range(X: npt.NDArray[Any], info: ModelInfo) -> None:
    """Every value finite float32 and at least its feature's minimum (as ``X``'s dtype holds it); the error names
    the first that is not."""
    lows, low_values = _lows(info.minimums, X.dtype)
    if len(X) <= SMALL_BATCH:
        rows = X.tolist()
        if all(low <= value <= FLOAT32_MAX for row in rows for low, value in zip(low_values, row, strict=True)):
            return  # (NaN fails both comparisons)
    elif ((X >= lows) & (X <= FLOAT32_MAX)).all():  # NaN fails both
        return
    if not (np.abs(X) <= FLOAT32_MAX).all():
        raise V2Error("input data must be finite float32 numbers")
    below = X < lows
    if below.any():
        row, col = map(int, np.argwhere(below)[0])
        bound = info.minimums[col]
        raise V2Error(
            f"row {row} feature {info.features[col]!r} must be >= {bound:g}"
            if math.isfinite(bound)
            else f"row {row} feature {info.features[col]!r} is out of range"
        )


def split_binary_body(body: bytes, header_length: str) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data of a request using the binary tensor extension."""
    # ASCII digits only ('²'.isdigit() is true, int('²') fails), and few of them (int() refuses 4,300+).
    a_length = header_length.isascii() and header_length.isdigit() and len(header_length) <= 18
    if not a_length or int(header_length) > len(body):
        raise V2Error(
            f"Inference-Header-Content-Length {shown(header_length)} does not fit a body of {len(body)} bytes"
        )
    return body[: int(header_length)], body[int(header_length) :]


def infer_response(
    name: str,
    info: ModelInfo,
    probabilities: npt.NDArray[np.float32],
    request_id: Any,
    contributions: npt.NDArray[np.float64] | None = None,
    base_value: float = 0.0,
    binary_outputs: frozenset[str] = frozenset(),
    ids: list[str] | None = None,
) -> tuple[dict[str, Any], list[bytes]]:
    """The response object, and the raw bytes of the outputs in ``binary_outputs``, in output order (each such
    output carries ``parameters.binary_data_size`` instead of ``data``): little-endian FP32, and BYTES as the
    protocol frames them."""
    tensors: list[tuple[str, Any]] = [(info.probability_output, probabilities)]
    if contributions is not None:
        tensors.append((CONTRIBUTIONS, contributions.astype(np.float32)))
    outputs, chunks = [], []
    for output_name, tensor in tensors:
        output: dict[str, Any] = {"name": output_name, "datatype": "FP32", "shape": list(tensor.shape)}
        if output_name in binary_outputs:
            chunks.append(tensor.astype("<f4", copy=False).tobytes())
            output["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            output["data"] = tensor.reshape(-1)
        outputs.append(output)
    if ids is not None:
        output = {"name": ID_FIELD, "datatype": "BYTES", "shape": [len(ids)]}
        if ID_FIELD in binary_outputs:
            chunks.append(encode_strings(ids))
            output["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            output["data"] = ids
        outputs.append(output)
    response: dict[str, Any] = {"model_name": name, "model_version": info.version, "outputs": outputs}
    if contributions is not None:
        response["parameters"] = {"base_value": base_value, "features": list(info.features)}
    if request_id is not None:
        response["id"] = request_id
    return response, chunks


@functools.lru_cache(maxsize=8)
def _lows(minimums: tuple[float, ...], dtype: np.dtype[Any]) -> tuple[npt.NDArray[Any], list[float]]:
    """The features' minimums in ``dtype`` (as an array, and as the Python numbers the array holds), once per model
    and dtype."""
    lows = np.asarray(minimums, dtype=dtype)
    lows.flags.writeable = False  # shared by every request
    return lows, lows.tolist()
