"""OTLP's ``ExportTraceServiceRequest``, written straight to protobuf's wire format: the messages of
``opentelemetry/proto/collector/trace/v1/trace_service.proto`` and ``trace/v1/trace.proto`` (v1), only the fields
we send. Building protobuf objects field by field costs tens of microseconds a span in Python, which a worker at
full sampling pays on the core that answers; this costs a few. The tests decode what it writes with
``opentelemetry-proto``'s own classes, over both transports.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SERVER, INTERNAL = 2, 1  # Span.SpanKind
STATUS_ERROR = 2  # Status.StatusCode


@dataclass(slots=True)
class Span:
    trace_id: bytes  # 16 bytes
    span_id: bytes  # 8 bytes
    parent_id: bytes  # 8 bytes, or empty for a root
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    error: bool = False
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)  # (name, time, attributes)
    links: list[tuple[bytes, bytes]] = field(default_factory=list)  # (trace id, span id)
    tracestate: str = ""


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64s as two's complement, as protobuf writes them
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]


def _bytes(number: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _string(number: int, value: str) -> bytes:
    return _bytes(number, value.encode("utf-8", "replace"))


def _any_value(value: Any) -> bytes:
    """``AnyValue``: string_value = 1, bool_value = 2, int_value = 3, double_value = 4."""
    if isinstance(value, bool):
        return b"\x10" + _varint(int(value))
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    return _string(1, str(value))


_BLOCKS: dict[tuple[int, tuple[tuple[str, Any], ...]], bytes] = {}  # attribute sets that repeat, encoded once
_MAX_BLOCKS = 4096  # a span's attributes repeat with its route, status and row count: a few sets per worker


def _attributes(number: int, attributes: Mapping[str, Any]) -> bytes:
    """Repeated ``KeyValue`` (key = 1, value = 2) in field ``number``."""
    items = tuple(attributes.items())
    found = _BLOCKS.get((number, items))
    if found is None:
        found = b"".join([_bytes(number, _string(1, key) + _bytes(2, _any_value(value))) for key, value in items])
        if len(_BLOCKS) < _MAX_BLOCKS and all(type(value) in (str, int) for _, value in items):  # 1 == True
            _BLOCKS[(number, items)] = found
    return found


_FIXED64 = struct.Struct("<Q")
_NAMES: dict[str, bytes] = {}  # span and event names, encoded once (field 5 of a span; field 2 of an event)


def _name(field_tag: bytes, name: str) -> bytes:
    found = _NAMES.get(name)
    if found is None:
        encoded = name.encode("utf-8", "replace")
        found = _varint(len(encoded)) + encoded
        if len(_NAMES) < _MAX_BLOCKS:
            _NAMES[name] = found
    return field_tag + found


def _span(span: Span) -> bytes:
    parts = [
        b"\x0a\x10", span.trace_id,  # trace_id = 1 (16 bytes)
        b"\x12\x08", span.span_id,  # span_id = 2 (8 bytes)
        _string(3, span.tracestate) if span.tracestate else b"",
        b"\x22\x08" + span.parent_id if span.parent_id else b"",  # parent_span_id = 4
        _name(b"\x2a", span.name),  # name = 5
        b"\x30", _SMALL[span.kind],  # kind = 6
        b"\x39", _FIXED64.pack(span.start_ns),  # start_time_unix_nano = 7 (fixed64)
        b"\x41", _FIXED64.pack(span.end_ns),  # end_time_unix_nano = 8
        _attributes(9, span.attributes),
    ]  # fmt: skip
    for name, time_ns, attributes in span.events:  # events = 11: time_unix_nano = 1, name = 2, attributes = 3
        event = b"\x09" + _FIXED64.pack(time_ns) + _name(b"\x12", name)
        parts.append(_bytes(11, event + _attributes(3, attributes) if attributes else event))
    for trace_id, span_id in span.links:  # links = 13: trace_id = 1, span_id = 2
        parts.append(b"\x6a\x1c\x0a\x10" + trace_id + b"\x12\x08" + span_id)
    if span.error:  # status = 15: code = 3
        parts.append(b"\x7a\x02\x18" + _SMALL[STATUS_ERROR])
    return b"".join(parts)


def encoded_span(span: Span) -> bytes:
    """One span as a ``ScopeSpans.spans`` field (number 2)."""
    return _bytes(2, _span(span))


def export_request(resource: Mapping[str, Any], scope: str, spans: Iterable[bytes]) -> bytes:
    """``ExportTraceServiceRequest{resource_spans: [{resource: {attributes}, scope_spans: [{scope: {name},
    spans}]}]}``, serialized, around spans written by :func:`encoded_span`."""
    scope_spans = _bytes(1, _string(1, scope)) + b"".join(spans)
    resource_spans = _bytes(1, _attributes(1, resource)) + _bytes(2, scope_spans)
    return _bytes(1, resource_spans)
