"""Just enough of the ONNX protobuf to read one node's attributes and to drop an optional output's nodes, without
the ``onnx`` package in the image.

Protocol Buffers' wire format: each field is a varint key (field number << 3 | wire type) followed by a varint
(type 0), 8 bytes (1), a length-prefixed payload (2) or 4 bytes (5). ModelProto.graph is field 7, GraphProto.node
field 1, NodeProto.op_type field 4 and .attribute field 5; AttributeProto holds name (1), f (2), i (3), s (4),
floats (7) and ints (8), repeated scalars packed or not. GraphProto.initializer is field 5 (TensorProto.name 8),
.input 11 and .output 12 (ValueInfoProto.name 1); NodeProto.input is field 1, .output field 2.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

_MODEL_GRAPH, _GRAPH_NODE, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 7, 1, 4, 5
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _NODE_INPUT, _NODE_OUTPUT, _TENSOR_NAME, _VALUE_NAME = (
    5,
    11,
    12,
    1,
    2,
    8,
    1,
)
_ATTR_NAME, _ATTR_F, _ATTR_I, _ATTR_S, _ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS = 1, 2, 3, 4, 7, 8, 9


class OnnxFormatError(ValueError):
    """The bytes are not the protobuf we expect."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise OnnxFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints, bytes for the rest."""
    for number, wire, value, _ in _spans(data):
        yield number, wire, value


def _spans(data: bytes) -> Iterator[tuple[int, int, Any, bytes]]:
    """(field number, wire type, value, the field's own bytes, key included)."""
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
        yield number, wire, value, data[start:pos]
    if pos != end:
        raise OnnxFormatError("field runs past the end of its message")


def _packed_varints(payload: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(payload):
        value, pos = _varint(payload, pos)
        values.append(value - (1 << 64) if value >= 1 << 63 else value)  # int64 two's complement
    return values


def _attribute(payload: bytes) -> tuple[str, Any]:
    name = ""
    floats: list[float] = []
    ints: list[int] = []
    strings: list[bytes] = []
    scalar: Any = None
    for number, wire, value in _fields(payload):
        if number == _ATTR_NAME:
            name = value.decode()
        elif number == _ATTR_F:
            scalar = struct.unpack("<f", value)[0]
        elif number == _ATTR_I:
            scalar = value - (1 << 64) if value >= 1 << 63 else value
        elif number == _ATTR_S:
            scalar = value
        elif number == _ATTR_FLOATS:
            floats.extend(np.frombuffer(value, "<f4").tolist() if wire == 2 else struct.unpack("<f", value))
        elif number == _ATTR_INTS:
            ints.extend(_packed_varints(value) if wire == 2 else [value - (1 << 64) if value >= 1 << 63 else value])
        elif number == _ATTR_STRINGS:
            strings.append(value)
    if floats:
        return name, np.asarray(floats, dtype=np.float32)
    if ints:
        return name, np.asarray(ints, dtype=np.int64)
    if strings:
        return name, strings
    return name, scalar


def node_attributes(model: bytes, op_type: str) -> dict[str, Any]:
    """The attributes of the graph's one node of type ``op_type``; ``OnnxFormatError`` if there is not exactly one."""
    found: list[dict[str, Any]] = []
    for number, _, graph in _fields(model):
        if number != _MODEL_GRAPH:
            continue
        for node_number, _, node in _fields(graph):
            if node_number != _GRAPH_NODE:
                continue
            fields = list(_fields(node))
            if any(n == _NODE_OP_TYPE and v == op_type.encode() for n, _, v in fields):
                found.append(dict(_attribute(v) for n, _, v in fields if n == _NODE_ATTRIBUTE))
    if len(found) != 1:
        raise OnnxFormatError(f"the graph has {len(found)} {op_type} nodes, expected one")
    return found[0]


def without_output(model: bytes, output: str, graph_input: str) -> bytes:
    """``model`` without the graph output ``output``, the nodes that make it, the input ``graph_input`` and the
    initializers no remaining node reads: the plain graph of a file whose optional output costs every call."""
    parts = []
    for number, _, value, raw in _spans(model):
        parts.append(_field(_MODEL_GRAPH, _pruned_graph(value, output, graph_input)) if number == _MODEL_GRAPH else raw)
    return b"".join(parts)


def _named(message: bytes, name_field: int, name: bytes) -> bool:
    return any(n == name_field and v == name for n, _, v in _fields(message))


def _pruned_graph(graph: bytes, output: str, graph_input: str) -> bytes:
    spans = list(_spans(graph))
    nodes = [value for number, _, value, _ in spans if number == _GRAPH_NODE]
    kept_nodes = [node for node in nodes if not _named(node, _NODE_OUTPUT, output.encode())]
    read = {v for node in kept_nodes for n, _, v in _fields(node) if n == _NODE_INPUT}
    kept = []
    for number, _, value, raw in spans:
        if number == _GRAPH_NODE and value not in kept_nodes:
            continue
        if number == _GRAPH_OUTPUT and _named(value, _VALUE_NAME, output.encode()):
            continue
        if number == _GRAPH_INPUT and _named(value, _VALUE_NAME, graph_input.encode()):
            continue
        if number == _GRAPH_INITIALIZER and not any(_named(value, _TENSOR_NAME, name) for name in read):
            continue
        kept.append(raw)
    return b"".join(kept)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
