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
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64s as two's complement, as protobuf writes them
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _bytes(number: int, value: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(value)) + value


def _string(number: int, value: str) -> bytes:
    return _bytes(number, value.encode("utf-8", "replace"))


def _fixed64(number: int, value: int) -> bytes:
    return _tag(number, 1) + struct.pack("<Q", value)


def _any_value(value: Any) -> bytes:
    """``AnyValue``: string_value = 1, bool_value = 2, int_value = 3, double_value = 4."""
    if isinstance(value, bool):
        return _tag(2, 0) + _varint(int(value))
    if isinstance(value, int):
        return _tag(3, 0) + _varint(value)
    if isinstance(value, float):
        return _tag(4, 1) + struct.pack("<d", value)
    return _string(1, str(value))


def _attributes(number: int, attributes: Mapping[str, Any]) -> bytes:
    """Repeated ``KeyValue`` (key = 1, value = 2) in field ``number``."""
    return b"".join(_bytes(number, _string(1, key) + _bytes(2, _any_value(value))) for key, value in attributes.items())


def _span(span: Span) -> bytes:
    parts = [
        _bytes(1, span.trace_id),
        _bytes(2, span.span_id),
        _string(3, span.tracestate) if span.tracestate else b"",
        _bytes(4, span.parent_id) if span.parent_id else b"",
        _string(5, span.name),
        _tag(6, 0) + _varint(span.kind),
        _fixed64(7, span.start_ns),
        _fixed64(8, span.end_ns),
        _attributes(9, span.attributes),
    ]
    for name, time_ns, attributes in span.events:  # Event: time_unix_nano = 1, name = 2, attributes = 3
        parts.append(_bytes(11, _fixed64(1, time_ns) + _string(2, name) + _attributes(3, attributes)))
    for trace_id, span_id in span.links:  # Link: trace_id = 1, span_id = 2
        parts.append(_bytes(13, _bytes(1, trace_id) + _bytes(2, span_id)))
    if span.error:  # Status: code = 3
        parts.append(_bytes(15, _tag(3, 0) + _varint(STATUS_ERROR)))
    return b"".join(parts)


def export_request(resource: Mapping[str, Any], scope: str, spans: Iterable[Span]) -> bytes:
    """``ExportTraceServiceRequest{resource_spans: [{resource: {attributes}, scope_spans: [{scope: {name},
    spans}]}]}``, serialized."""
    scope_spans = _bytes(1, _string(1, scope)) + b"".join(_bytes(2, _span(span)) for span in spans)
    resource_spans = _bytes(1, _attributes(1, resource)) + _bytes(2, scope_spans)
    return _bytes(1, resource_spans)
