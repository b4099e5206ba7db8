"""The one settings object, read once from ``PULSE_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PREFIX = "PULSE_"
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable and the value."""


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ValueError("not a boolean (use true/false/1/0)")


def _optional_path(text: str) -> Path | None:
    return Path(text) if text.strip() else None


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(f"not a log level ({'/'.join(LOG_LEVELS)})")
    return text.lower()


_PARSERS: dict[str, Callable[[str], Any]] = {
    "model_path": Path,
    "model_sha256": str,
    "model_name": str,
    "host": str,
    "port": int,
    "workers": int,
    "max_batch": int,
    "max_body_bytes": int,
    "ort_threads": int,
    "log_level": _log_level,
    "access_log": _bool,
    "request_log": _optional_path,
    "request_log_sample": float,
    "request_log_queue": int,
    "drain_seconds": float,
}

_MINIMUMS: dict[str, float] = {
    "port": 0,
    "workers": 1,
    "max_batch": 1,
    "max_body_bytes": 1,
    "ort_threads": 1,
    "request_log_queue": 1,
    "drain_seconds": 0,
    "request_log_sample": 0,
}


@dataclass(frozen=True, slots=True)
class Settings:
    model_path: Path = Path("artifacts/model.onnx")
    model_sha256: str = ""  # empty: check against <model>.sha256 when that file exists
    model_name: str = "churn"  # the model's name in the V2 inference protocol
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ort_threads: int = 1  # one core per worker; more helps large batches only
    log_level: str = "info"
    access_log: bool = False  # /metrics counts every request; a log line per request costs throughput
    request_log: Path | None = None  # JSONL of features and predictions, for drift reports
    request_log_sample: float = 1.0
    request_log_queue: int = 10_000
    drain_seconds: float = 2.0  # after SIGTERM: not ready, still serving with Connection: close

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read every ``PULSE_<FIELD>`` variable; a bad value raises :class:`SettingsError` naming it."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = PREFIX + field.name.upper()
            if name not in environ:
                continue
            raw = environ[name]
            try:
                value = _PARSERS[field.name](raw)
            except ValueError as exc:
                raise SettingsError(f"{name} has value {raw!r}: {exc}") from exc
            minimum = _MINIMUMS.get(field.name)
            if minimum is not None and value < minimum:
                raise SettingsError(f"{name} has value {raw!r}: must be at least {minimum:g}")
            if field.name == "request_log_sample" and value > 1:
                raise SettingsError(f"{name} has value {raw!r}: must be between 0 and 1")
            values[field.name] = value
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, for worker processes that read them again."""
        env = {}
        for field in fields(self):
            value = getattr(self, field.name)
            text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            env[PREFIX + field.name.upper()] = text
        return env
