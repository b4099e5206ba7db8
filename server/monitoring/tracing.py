"""OpenTelemetry tracing of the requests every door hands to the pipeline, configured the standard way (``OTEL_*``
variables), off when none asks for it.

On when ``OTEL_TRACES_EXPORTER`` is ``otlp`` or ``console``, or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none`` turns it off. Off, a request pays the one header comparison that finds its
``traceparent`` (:class:`~server.pipeline.head.RequestHead`) and nothing else.

On, each request's trace is decided before anything is recorded (:meth:`Tracer.decide`): the W3C ``traceparent``
it came with, and ``OTEL_TRACES_SAMPLER`` / ``_ARG`` (``parentbased_traceidratio`` at 1.0 by default; the spec's
six samplers). A sampled request becomes one SERVER span (named by its route, with the semantic conventions'
attributes, its stages as the events ``parsed``, ``score`` and ``scored``); the requests scored in the same
onnxruntime call link to the first one's span. Each span is written as OTLP protobuf
(:mod:`server.monitoring.otlp`) when its turn is answered and waits on a bounded queue
(``OTEL_BSP_MAX_QUEUE_SIZE``); a background thread sends them as ``ExportTraceServiceRequest`` batches
(``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, every ``OTEL_BSP_SCHEDULE_DELAY`` ms) over OTLP/HTTP (protobuf) or
OTLP/gRPC (``OTEL_EXPORTER_OTLP_PROTOCOL``). A full queue or a collector that is down, slow or refusing drops
spans and counts them (``pulse_trace_spans_dropped_total``); no answer ever waits for it, and a shutdown gives it
at most ``FLUSH_SECONDS``. Each worker process exports its own spans.
"""

from __future__ import annotations

import collections
import http.client
import json
import logging
import os
import random
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from server.monitoring.otlp import Span, encoded_span, export_request

logger = logging.getLogger(__name__)

SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
PROTOCOLS = ("http/protobuf", "grpc")
FLUSH_SECONDS = 2.0  # what a shutdown gives the last spans: never more than a drain budget's share
SCOPE = "ml-pulsechecker"
Sender = Callable[[list[bytes]], None]  # sends one batch of written spans; raises when it could not


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable the server cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class TraceConfig:
    exporter: str  # "otlp" or "console"
    endpoint: str  # the OTLP traces endpoint: a URL (HTTP) or host:port (gRPC)
    protocol: str
    headers: dict[str, str]
    timeout: float
    sampler: str
    ratio: float
    resource: dict[str, str]
    max_queue: int = 2048
    max_batch: int = 512
    schedule_delay: float = 5.0
    export_timeout: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TraceConfig | None:
        """The configuration the ``OTEL_*`` variables give, ``None`` when tracing is off."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        traces_endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if not exporter:
            exporter = "otlp" if traces_endpoint or base_endpoint else "none"
        if exporter == "none":
            return None
        if exporter not in ("otlp", "console"):
            raise TracingConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: expected otlp, console or none")
        protocol = _first(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOLS[0]
        if protocol not in PROTOCOLS:
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected {' or '.join(PROTOCOLS)}")
        if traces_endpoint:
            endpoint = traces_endpoint  # used as it is
        else:
            default = "http://localhost:4318" if protocol == "http/protobuf" else "http://localhost:4317"
            endpoint = (base_endpoint or default).rstrip("/")
            if protocol == "http/protobuf":
                endpoint += "/v1/traces"  # the base endpoint's signal path, as the spec says
        sampler = environ.get("OTEL_TRACES_SAMPLER", "parentbased_traceidratio").strip().lower()
        if sampler not in SAMPLERS:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER={sampler!r}: expected one of {', '.join(SAMPLERS)}")
        ratio = _number(environ, "OTEL_TRACES_SAMPLER_ARG", 1.0, 0.0, 1.0) if sampler.endswith("ratio") else 1.0
        resource = _pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES")
        resource["service.name"] = environ.get("OTEL_SERVICE_NAME") or resource.get("service.name") or SCOPE
        headers = _pairs(
            _first(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
            "OTEL_EXPORTER_OTLP_HEADERS",
        )
        timeout_ms = _number(environ, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000, 1, 600_000)
        return cls(
            exporter=exporter,
            endpoint=endpoint,
            protocol=protocol,
            headers=headers,
            timeout=timeout_ms / 1000,
            sampler=sampler,
            ratio=ratio,
            resource=resource,
            max_queue=int(_number(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1_000_000)),
            max_batch=int(_number(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1_000_000)),
            schedule_delay=_number(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 3_600_000) / 1000,
            export_timeout=_number(environ, "OTEL_BSP_EXPORT_TIMEOUT", 30_000, 1, 3_600_000) / 1000,
        )


def _first(environ: Mapping[str, str], *names: str) -> str:
    return next((environ[name].strip() for name in names if environ.get(name, "").strip()), "")


def _number(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise TracingConfigError(f"{name}={text!r}: expected a number from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise TracingConfigError(f"{name}={text!r}: expected a number from {low:g} to {high:g}")
    return value


def _pairs(text: str, name: str) -> dict[str, str]:
    """``key=value,key=value`` (W3C Baggage's form, values percent-encoded), as the spec's list variables take."""
    from urllib.parse import unquote

    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TracingConfigError(f"{name}: {item!r} is not key=value")
        pairs[key.strip()] = unquote(value.strip())
    return pairs


class Trace(NamedTuple):
    """A sampled request's place in its trace: the ids its span takes."""

    trace_id: bytes  # 16 bytes
    parent_id: bytes  # 8 bytes, or empty for a root
    span_id: bytes  # the request's SERVER span
    tracestate: str = ""


# version-traceid-parentid-flags, lowercase hex; a version after 00 may add fields after a dash
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?", re.DOTALL)
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16


def parse_traceparent(value: bytes | None) -> tuple[bytes, bytes, bool] | None:
    """(trace id, parent span id, sampled) from a W3C ``traceparent`` (version 00, or a later version's first four
    fields); ``None`` for a missing or invalid one (then the request starts a trace of its own)."""
    if value is None or len(value) > 512:
        return None
    found = _TRACEPARENT.fullmatch(value)
    if found is None:
        return None
    version, trace_hex, parent_hex, flags = found.groups()
    if (
        version == b"ff"
        or (version == b"00" and len(value) != 55)
        or trace_hex == _ZERO_TRACE
        or parent_hex == _ZERO_SPAN
    ):
        return None
    return bytes.fromhex(trace_hex.decode()), bytes.fromhex(parent_hex.decode()), bool(int(flags, 16) & 1)


class Tracer:
    """One worker's sampler, span queue and exporting thread."""

    def __init__(self, config: TraceConfig, grpc_sender: Sender | None = None) -> None:
        """``grpc_sender``: OTLP/gRPC's (``server.grpc.otlp``, given by the lifespan: grpc is not this layer's)."""
        self.config = config
        self.counters = {"spans_exported": 0, "spans_dropped": 0}
        self._queue: collections.deque[bytes] = collections.deque()  # spans, written
        self._offset = _unix_offset_ns()  # perf_counter -> Unix nanoseconds, renewed by the thread
        self._wake = threading.Event()
        self._stopping = False
        # A root (no traceparent) is sampled when its trace id's low 8 bytes fall under the ratio's threshold
        # (every sampler but the ratio ones at 1.0 and the always_off ones).
        self._roots_off = config.sampler.endswith("always_off")
        ratio = config.ratio if config.sampler.endswith("traceidratio") else 1.0
        self._threshold = int(ratio * (1 << 64))
        self._send = self._sender(grpc_sender)
        self._write: Callable[[Span, int], bytes] = _console_line if config.exporter == "console" else encoded_span
        self._thread = threading.Thread(target=self._run, name="pulse-traces", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # Deciding and recording, on the event loop ------------------------------------------------------------------
    def decide(self, traceparent: bytes | None, tracestate_header: bytes | None = None) -> Trace | None:
        """The request's trace when it is sampled, ``None`` when not: decided before any span exists. A request
        without a ``traceparent`` that the ratio leaves out costs one random draw."""
        if traceparent is None:
            if self._roots_off:
                return None
            low = random.getrandbits(64)  # the ratio reads the trace id's low 8 bytes, so draw those first
            if low >= self._threshold:
                return None
            return Trace((random.getrandbits(64) << 64 | low or 1).to_bytes(16, "big"), b"", _span_id())
        sampler = self.config.sampler
        tracestate = "" if tracestate_header is None else tracestate_header.decode("latin-1")[:512]
        parent = parse_traceparent(traceparent)
        if parent is None:  # an invalid traceparent: the request starts a trace of its own
            return self.decide(None)
        if sampler.startswith("parentbased_"):
            trace_id, parent_id, sampled = parent
            return Trace(trace_id, parent_id, _span_id(), tracestate) if sampled else None
        if sampler.endswith("always_off"):
            return None
        if sampler.endswith("traceidratio") and int.from_bytes(parent[0][8:], "big") >= self._threshold:
            return None
        return Trace(parent[0], parent[1], _span_id(), tracestate)

    def put(self, span: Span) -> None:
        """Write a finished span and queue it for the exporting thread; dropped and counted when the queue is full.
        Written here, on the event loop (~3 µs), the thread only sends bytes: writing them on the thread measured
        dearer, as the two threads then take turns at the GIL for every batch."""
        queue = self._queue
        if len(queue) >= self.config.max_queue:
            self.counters["spans_dropped"] += 1
            return
        queue.append(self._write(span, self._offset))
        if len(queue) >= self.config.max_batch:
            self._wake.set()

    # Exporting, on its own thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.schedule_delay)
            self._wake.clear()
            self._offset = _unix_offset_ns()  # the two clocks may drift apart: renewed each round
            stopping = self._stopping
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.config.max_batch))]
                self._export(batch)
            if stopping:
                return

    def _export(self, batch: list[bytes]) -> None:
        try:
            self._send(batch)
        except Exception as exc:  # a collector down, slow or refusing: counted, never in an answer's way
            self.counters["spans_dropped"] += len(batch)
            logger.warning("trace export failed: %d spans dropped: %s", len(batch), str(exc).splitlines()[0][:200])
            return
        self.counters["spans_exported"] += len(batch)

    def shutdown(self) -> None:
        """Send what is queued, for at most ``FLUSH_SECONDS``; what is left then is counted as dropped."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(FLUSH_SECONDS)
        self.counters["spans_dropped"] += len(self._queue)
        self._queue.clear()

    def _sender(self, grpc_sender: Sender | None) -> Sender:
        config = self.config
        if config.exporter == "console":
            return _print
        if config.protocol == "grpc":
            if grpc_sender is None:
                raise TracingConfigError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc: no gRPC sender was given")
            return grpc_sender
        return _HttpSender(config)


def _span_id() -> bytes:
    return random.getrandbits(64).to_bytes(8, "big") or b"\x00" * 7 + b"\x01"


def export_body(config: TraceConfig, batch: list[bytes]) -> bytes:
    """The batch of written spans as an OTLP export request."""
    return export_request(config.resource, SCOPE, batch)


def _unix_offset_ns() -> int:
    """What turns a ``perf_counter`` time into Unix nanoseconds (the spans' clock into the protocol's)."""
    return time.time_ns() - int(time.perf_counter() * 1e9)


def _console_line(span: Span, offset_ns: int) -> bytes:
    """``console``: a span as a JSON line."""
    record = {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_id.hex(),
        "name": span.shape.name,
        "start_ns": int(span.start * 1e9) + offset_ns,
        "end_ns": int(span.end * 1e9) + offset_ns,
        "attributes": {**span.shape.attributes, **dict(span.own)},
        "events": [{"name": name, "time_ns": int(at * 1e9) + offset_ns} for name, at in span.events],
        "links": [{"trace_id": trace_id.hex(), "span_id": span_id.hex()} for trace_id, span_id in span.links],
        "error": span.error,
    }
    return (json.dumps(record) + "\n").encode()


def _print(batch: list[bytes]) -> None:
    """``console``: the batch's lines on stdout."""
    sys.stdout.write(b"".join(batch).decode())
    sys.stdout.flush()


class _HttpSender:
    """OTLP/HTTP with protobuf bodies (``http/protobuf``), on one kept-alive connection (opened again after a
    failure): a new TCP connection per batch costs more than writing the batch."""

    def __init__(self, config: TraceConfig) -> None:
        self.config = config
        url = urllib.parse.urlsplit(config.endpoint)
        self._url = url
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._timeout = min(config.timeout, config.export_timeout)
        self._connection: http.client.HTTPConnection | None = None
        self._headers = {"content-type": "application/x-protobuf", **config.headers}

    def __call__(self, batch: list[bytes]) -> None:
        body = export_body(self.config, batch)
        if self._connection is None:
            url, kind = (
                self._url,
                http.client.HTTPSConnection if self._url.scheme == "https" else http.client.HTTPConnection,
            )
            self._connection = kind(url.hostname or "localhost", url.port, timeout=self._timeout)
        try:
            self._connection.request("POST", self._path, body, self._headers)
            response = self._connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            self._connection = None
            raise
        if not 200 <= response.status < 300:
            raise OSError(f"the collector answered {response.status} {response.reason}")
