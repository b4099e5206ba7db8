"""Settings are read once from PULSE_* variables; a bad value names the variable and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import DEFAULT_MAX_BATCH, Settings, SettingsError


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


def test_round_trip_through_the_environment() -> None:
    settings = Settings(port=1234, access_log=True, request_log=Path("x.jsonl"))
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PULSE_PORT", "eighty", "PULSE_PORT has value 'eighty'"),
        ("PULSE_MAX_BATCH", "0", "must be at least 1"),
        ("PULSE_ACCESS_LOG", "yes", "not a boolean"),
        ("PULSE_LOG_LEVEL", "loud", "not a log level"),
        ("PULSE_REQUEST_LOG_SAMPLE", "1.5", "between 0 and 1"),
        ("PULSE_WORKERS", "-1", "must be at least 1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({name: value})
