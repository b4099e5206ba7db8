"""OTLP's ``ExportTraceServiceRequest``, written straight to protobuf's wire format: the messages of
``opentelemetry/proto/collector/trace/v1/trace_service.proto`` and ``trace/v1/trace.proto`` (v1), only the fields
we send. Building protobuf objects field by field costs tens of microseconds a span in Python, which a worker at
full sampling pays on the core that answers; this costs a few: what spans of one kind share (:class:`Shape`) is
written once, and a span writes its ids, times, events and links around it. The tests decode what it writes with
``opentelemetry-proto``'s own classes, over both transports.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

SERVER, INTERNAL = 2, 1  # Span.SpanKind
STATUS_ERROR = 2  # Status.StatusCode


@dataclass(frozen=True, slots=True)
class Shape:
    """What every span of one kind shares (name, kind, the attributes of its route, status and model), with its
    protobuf written once: a span then writes only what is its own."""

    name: str
    kind: int
    attributes: Mapping[str, Any]
    head: bytes  # name = 5, kind = 6
    block: bytes  # attributes = 9


def shape(name: str, kind: int, attributes: Mapping[str, Any]) -> Shape:
    return Shape(name, kind, attributes, _string(5, name) + b"\x30" + _SMALL[kind], _attributes(9, attributes))


class Span(NamedTuple):
    """A finished span, as the event loop records it: times are ``time.perf_counter()`` seconds, which
    :func:`encoded_span` turns into Unix nanoseconds with the offset it is given."""

    trace_id: bytes  # 16 bytes
    span_id: bytes  # 8 bytes
    parent_id: bytes  # 8 bytes, or empty for a root
    tracestate: str
    shape: Shape
    start: float
    end: float
    own: tuple[tuple[str, Any], ...]  # this span's attributes beyond its shape's
    events: tuple[tuple[str, float], ...]  # (name, time)
    links: tuple[tuple[bytes, bytes], ...]  # (trace id, span id)
    error: bool


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if 0 < value < 0x4000:  # a span's length, most of the time
        return bytes((value & 0x7F | 0x80, value >> 7))
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


def _attributes(number: int, attributes: Mapping[str, Any] | tuple[tuple[str, Any], ...]) -> bytes:
    """Repeated ``KeyValue`` (key = 1, value = 2) in field ``number``."""
    items = attributes.items() if isinstance(attributes, Mapping) else attributes
    return b"".join([_bytes(number, _string(1, key) + _bytes(2, _any_value(value))) for key, value in items])


_FIXED64 = struct.Struct("<Q")
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano = 7, end_time_unix_nano = 8 (fixed64 each)
_OWN: dict[tuple[tuple[str, Any], ...], bytes] = {}  # a span's own attributes that repeat (its row count)
_EVENTS: dict[str, tuple[bytes, bytes]] = {}  # an event's bytes before and after its time, by its name


def _event_parts(name: str) -> tuple[bytes, bytes]:
    """``Span.events`` (11): ``{time_unix_nano = 1 (fixed64), name = 2}``, written around the time."""
    found = _EVENTS.get(name)
    if found is None:
        tail = _string(2, name)
        found = _varint(11 << 3 | 2) + _varint(9 + len(tail)) + b"\x09", tail
        if len(_EVENTS) < 64:  # the pipeline's few stage names
            _EVENTS[name] = found
    return found


def encoded_span(span: Span, offset_ns: int) -> bytes:
    """One span as a ``ScopeSpans.spans`` field (number 2); ``offset_ns`` turns its times into Unix nanoseconds."""
    parts = [b"\x0a\x10", span.trace_id, b"\x12\x08", span.span_id]  # trace_id = 1, span_id = 2
    if span.tracestate:
        parts.append(_string(3, span.tracestate))
    if span.parent_id:
        parts += (b"\x22\x08", span.parent_id)  # parent_span_id = 4
    parts += (
        span.shape.head,
        _TIMES.pack(0x39, int(span.start * 1e9) + offset_ns, 0x41, int(span.end * 1e9) + offset_ns),
        span.shape.block,
    )
    if span.own:  # a repeated field may come in two runs: decoders join them
        own = _OWN.get(span.own)
        if own is None:
            own = _attributes(9, span.own)
            if len(_OWN) < 1024 and all(type(value) is int for _, value in span.own):  # row counts repeat, ids don't
                _OWN[span.own] = own
        parts.append(own)
    for name, at in span.events:
        before, after = _event_parts(name)
        parts += (before, _FIXED64.pack(int(at * 1e9) + offset_ns), after)
    for trace_id, span_id in span.links:  # links = 13: trace_id = 1, span_id = 2
        parts.append(b"\x6a\x1c\x0a\x10" + trace_id + b"\x12\x08" + span_id)
    if span.error:  # status = 15: code = 3
        parts.append(b"\x7a\x02\x18" + _SMALL[STATUS_ERROR])
    body = b"".join(parts)
    return b"\x12" + _varint(len(body)) + body


def export_request(resource: Mapping[str, Any], scope: str, spans: Iterable[bytes]) -> bytes:
    """``ExportTraceServiceRequest{resource_spans: [{resource: {attributes}, scope_spans: [{scope: {name},
    spans}]}]}``, serialized, around spans written by :func:`encoded_span`."""
    scope_spans = _bytes(1, _string(1, scope)) + b"".join(spans)
    resource_spans = _bytes(1, _attributes(1, resource)) + _bytes(2, scope_spans)
    return _bytes(1, resource_spans)
