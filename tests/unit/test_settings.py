"""Settings are read once from PULSE_* variables; a bad value names the variable and the value."""

from __future__ import annotations

import math
import os
import re
from dataclasses import fields
from pathlib import Path

import pytest

from server.config.settings import DEFAULT_MAX_BATCH, Settings, SettingsError


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.max_batch == DEFAULT_MAX_BATCH
    assert settings.request_log is None


def test_every_field_is_read_from_its_variable() -> None:
    settings = Settings.from_env(
        {
            "PULSE_MODEL_PATH": "/m/model.onnx",
            "PULSE_PORT": "9000",
            "PULSE_WORKERS": "3",
            "PULSE_MAX_BATCH": "10",
            "PULSE_ACCESS_LOG": "true",
            "PULSE_REQUEST_LOG": "/tmp/r.jsonl",
            "PULSE_REQUEST_LOG_SAMPLE": "0.25",
            "PULSE_LOG_LEVEL": "DEBUG",
            "PULSE_DRAIN_SECONDS": "0",
            "UNRELATED": "x",
        }
    )
    assert settings.model_path == Path("/m/model.onnx")
    assert (settings.port, settings.workers, settings.max_batch) == (9000, 3, 10)
    assert settings.access_log is True
    assert settings.request_log == Path("/tmp/r.jsonl")
    assert settings.request_log_sample == 0.25
    assert settings.log_level == "debug"
    assert settings.drain_seconds == 0.0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PULSE_PORT", "eighty", "PULSE_PORT has value 'eighty'"),
        ("PULSE_PORT", "70000", "PULSE_PORT has value '70000': must be between 0 and 65535"),
        ("PULSE_MAX_BATCH", "0", "PULSE_MAX_BATCH has value '0': must be between 1 and"),
        ("PULSE_ACCESS_LOG", "yes", "not a boolean"),
        ("PULSE_LOG_LEVEL", "loud", "not a log level"),
        ("PULSE_REQUEST_LOG_SAMPLE", "1.5", "must be between 0 and 1"),
        ("PULSE_REQUEST_LOG_SAMPLE", "nan", "PULSE_REQUEST_LOG_SAMPLE has value 'nan': not a finite number"),
        ("PULSE_WORKERS", "-1", "must be between 1 and 256"),
        ("PULSE_DRAIN_SECONDS", "inf", "PULSE_DRAIN_SECONDS has value 'inf': not a finite number"),
        ("PULSE_DRAIN_SECONDS", "nan", "PULSE_DRAIN_SECONDS has value 'nan': not a finite number"),
        ("PULSE_DRAIN_SECONDS", "-1", "must be between 0 and 3600"),
        ("PULSE_GRACEFUL_TIMEOUT_SECONDS", "100000", "must be between 0 and 3600"),
        ("PULSE_GRACEFUL_TIMEOUT_SECONDS", "inf", "PULSE_GRACEFUL_TIMEOUT_SECONDS has value 'inf'"),
        ("PULSE_PORT", "65536", "must be between 0 and 65535"),
        ("PULSE_PORT", "9" * 30, "must be between 0 and 65535"),
        ("PULSE_MAX_BODY_BYTES", "9" * 25, "must be between 1 and 2147483648"),
        ("PULSE_MAX_HEADER_BYTES", "10", "must be between 1024 and 16777216"),
        ("PULSE_HEADER_TIMEOUT_SECONDS", "0", "must be between 0.1 and 3600"),
        ("PULSE_MAX_CONNECTIONS", "0", "must be between 1 and 1000000"),
        ("PULSE_MAX_PENDING_BODY_BYTES", "9" * 20, "must be between 1024 and 1099511627776"),
    ],
)
def test_bad_values_name_the_variable_the_value_and_the_range(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({name: value})


def test_every_numeric_setting_declares_a_finite_range() -> None:
    for field in fields(Settings):
        if field.type in ("int", "float"):
            low, high = field.metadata["low"], field.metadata["high"]
            assert low is not None and high is not None, field.name
            assert math.isfinite(low) and math.isfinite(high) and low <= getattr(Settings(), field.name) <= high


def test_flags_override_the_environment_without_writing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.__main__ import read_settings

    monkeypatch.setenv("PULSE_PORT", "9100")
    monkeypatch.setenv("PULSE_DRAIN_SECONDS", "7")
    before = dict(os.environ)
    settings = read_settings(["--port", "9200", "--model", "m.onnx"])
    assert (settings.port, settings.model_path, settings.drain_seconds) == (9200, Path("m.onnx"), 7.0)
    assert dict(os.environ) == before


def test_a_bad_flag_names_its_variable() -> None:
    from server.__main__ import read_settings

    with pytest.raises(SettingsError, match="PULSE_WORKERS has value '0'"):
        read_settings(["--workers", "0"])
