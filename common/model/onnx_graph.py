"""Just enough of the ONNX protobuf to read one node's attributes, without the ``onnx`` package in the image.

Protocol Buffers' wire format: each field is a varint key (field number << 3 | wire type) followed by a varint
(type 0), 8 bytes (1), a length-prefixed payload (2) or 4 bytes (5). ModelProto.graph is field 7, GraphProto.node
field 1, NodeProto.op_type field 4 and .attribute field 5; AttributeProto holds name (1), f (2), i (3), s (4),
floats (7) and ints (8), repeated scalars packed or not.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

_MODEL_GRAPH, _GRAPH_NODE, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 7, 1, 4, 5
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
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, data[pos : pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            yield number, wire, data[pos : pos + length]
            pos += length
        elif wire == 5:
            yield number, wire, data[pos : pos + 4]
            pos += 4
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
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
