"""The one settings object, read once from ``PULSE_*`` environment variables.

Each field declares how its text is parsed and which values it accepts, in one place (the field's metadata),
the way scikit-learn declares ``_parameter_constraints``: a bad value is one error naming the variable, the
value and what is allowed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PREFIX = "PULSE_"
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MIB = 1024 * 1024
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
HTTP_MODES = ("fast", "stock")  # our own listener and connection path, or uvicorn serving the ASGI app


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable, the value and what is allowed."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError("not a boolean (use true/false/1/0)")


def _optional_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


def _optional_int(text: str) -> int | None:
    return int(text) if text.strip() else None


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(f"not a log level ({'/'.join(LOG_LEVELS)})")
    return text.lower()


def _http_mode(text: str) -> str:
    if text.lower() not in HTTP_MODES:
        raise ValueError(f"not an HTTP mode ({'/'.join(HTTP_MODES)})")
    return text.lower()


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _setting(default: Any, parse: Callable[[str], Any], low: float | None = None, high: float | None = None) -> Any:
    """A field with its parser and its closed range ``[low, high]`` (``None``: unbounded on that side)."""
    return field(default=default, metadata={"parse": parse, "low": low, "high": high})


@dataclass(frozen=True, slots=True)
class Settings:
    model_path: Path = _setting(Path("artifacts/model.onnx"), Path)
    model_sha256: str = _setting("", str)  # empty: check against <model>.sha256 when that file exists
    model_dir: Path | None = _setting(None, _optional_path)  # admin swaps load only from here (unset: model's folder)
    model_name: str = _setting("churn", str)  # the model's name in the V2 inference protocol
    host: str = _setting("127.0.0.1", str)
    port: int = _setting(8000, int, 0, 65535)
    workers: int = _setting(1, int, 1, 256)
    http: str = _setting("fast", _http_mode)
    grpc_port: int | None = _setting(None, _optional_int, 1, 65535)  # the V2 gRPC service (off when unset)
    grpc_max_streams: int = _setting(100, int, 1, 1_000_000)  # concurrent gRPC calls per HTTP/2 connection
    grpc_max_concurrent_rpcs: int = _setting(1000, int, 1, 1_000_000)  # gRPC calls per worker, probes included
    grpc_max_connection_idle_seconds: float = _setting(300.0, _finite_float, 1, 10**7)  # then GOAWAY
    grpc_max_connection_age_seconds: float = _setting(1800.0, _finite_float, 1, 10**7)  # then GOAWAY: rebalance
    grpc_reflection: bool = _setting(True, _bool)  # server reflection (grpcurl, Postman); describes the API only
    max_batch: int = _setting(DEFAULT_MAX_BATCH, int, 1, 1_000_000)
    max_body_bytes: int = _setting(DEFAULT_MAX_BODY_BYTES, int, 1, 1 << 31)
    max_header_bytes: int = _setting(32 * 1024, int, 1024, 1 << 24)  # request line + headers, as nginx's 4 x 8 KB
    max_headers: int = _setting(100, int, 1, 10_000)  # header fields per request, as Envoy
    header_timeout_seconds: float = _setting(10.0, _finite_float, 0.1, 3600)  # connection or first byte -> head
    body_timeout_seconds: float = _setting(30.0, _finite_float, 0.1, 3600)  # end of head -> whole body
    max_connections: int = _setting(1000, int, 1, 1_000_000)  # per worker; above it, probes only
    max_pending_body_bytes: int = _setting(64 * MIB, int, 1024, 1 << 40)  # bodies being read, per worker
    max_in_flight: int = _setting(0, int, 0, 1_000_000)  # per worker; above it 503 + Retry-After at once (0: off)
    api_keys_file: Path | None = _setting(None, _optional_path)  # hashed keys with scopes (off when unset)
    tls_cert: Path | None = _setting(None, _optional_path)  # PEM certificate chain: HTTPS when set with tls_key
    tls_key: Path | None = _setting(None, _optional_path)
    max_model_bytes: int = _setting(512 * MIB, int, 1024, 1 << 40)  # model files larger than this are refused
    ort_threads: int = _setting(1, int, 1, 256)  # one core per worker; more helps large batches only
    log_level: str = _setting("info", _log_level)
    access_log: bool = _setting(False, _bool)  # /metrics counts every request; a log line each costs throughput
    request_log: Path | None = _setting(None, _optional_path)  # JSONL of features and predictions, for drift
    request_log_sample: float = _setting(1.0, _finite_float, 0, 1)
    request_log_queue: int = _setting(10_000, int, 1, 10_000_000)
    request_log_max_bytes: int = _setting(100 * MIB, int, 0, 1 << 50)  # rotate past this size (0: never)
    request_log_max_age_seconds: float = _setting(86_400.0, _finite_float, 0, 10**9)  # ... or this age (0: never)
    request_log_keep: int = _setting(0, int, 0, 1_000_000)  # rotated files kept, oldest deleted first (0: all)
    shadow_model: Path | None = _setting(None, _optional_path)  # a candidate scored beside the served model
    shadow_sample: float = _setting(0.1, _finite_float, 0, 1)  # share of requests the shadow scores
    estimate_tolerance: float = _setting(0.05, _finite_float, 0, 1)  # alert: estimated ROC-AUC this far below test
    drain_seconds: float = _setting(2.0, _finite_float, 0, 3600)  # after SIGTERM: not ready, still serving
    graceful_timeout_seconds: int = _setting(30, int, 0, 3600)  # then in-flight requests get this long to finish
    metrics_dir: Path | None = _setting(None, _optional_path)  # workers' metric snapshots (made for --workers N)
    metrics_flush_seconds: float = _setting(0.5, _finite_float, 0.05, 60)  # how stale another worker's figures get
    drift_slots: int = _setting(10, int, 1, 1440)  # the live drift window: this many slots ...
    drift_slot_seconds: float = _setting(60.0, _finite_float, 1, 86400)  # ... of this length
    drift_min_rows: int = _setting(100, int, 1, 10**9)  # fewer rows in the window: no PSI reported (noise)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read every ``PULSE_<FIELD>`` variable; a bad value raises :class:`SettingsError` naming it."""
        return cls.from_strings(
            {f.name: environ[_variable(f.name)] for f in fields(cls) if _variable(f.name) in environ}
        )

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> Settings:
        """Settings from text values keyed by field name (environment variables or command-line flags)."""
        parsed: dict[str, Any] = {}
        by_name = {f.name: f for f in fields(cls)}
        for name, raw in values.items():
            meta = by_name[name].metadata
            try:
                value = meta["parse"](raw)
            except ValueError as exc:
                raise SettingsError(f"{_variable(name)} has value {raw!r}: {exc}") from exc
            low, high = meta["low"], meta["high"]
            if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
                raise SettingsError(
                    f"{_variable(name)} has value {raw!r}: must be between {_number(low)} and {_number(high)}"
                )
            parsed[name] = value
        return cls(**parsed)


def _number(bound: float | None) -> str:
    return "any" if bound is None else str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _variable(name: str) -> str:
    return PREFIX + name.upper()
