"""Error bodies echo what the client sent; whatever that was, the body is valid JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.core.errors import ApiError, V2Error, ValidationFailed, dumps_safely, field_error


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "content",
    [
        {"detail": [field_error(["body", "\ud800"], "Extra inputs are not permitted", "extra_forbidden")]},
        {"error": _nested(300)},  # deeper than orjson writes
        {"detail": {"\udfff": object()}},
    ],
    ids=["lone surrogate", "nested 300 deep", "unknown type"],
)
def test_an_error_body_is_json_whatever_it_echoes(content: dict[str, Any]) -> None:
    text = dumps_safely(content).decode("utf-8")
    assert set(json.loads(text)) == set(content)


def test_a_lone_surrogate_is_shown_escaped_not_dropped() -> None:
    body = ValidationFailed([field_error(["body", "\ud800"], "m", "t")]).body()
    assert json.loads(body)["detail"][0]["loc"] == ["body", "\\ud800"]


def test_plain_errors_keep_orjsons_exact_output() -> None:
    assert ApiError("bad").body() == b'{"detail":"bad"}'
    assert V2Error("bad").body() == b'{"error":"bad"}'
