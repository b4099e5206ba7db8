from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.http.app import create_app

MAX_BATCH = 50
MAX_BODY = 20_000


@pytest.fixture(scope="module")
def settings(exported: Path) -> Settings:
    return Settings(model_path=exported, max_batch=MAX_BATCH, max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def golden(exported: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((exported.parent / "golden_rows.json").read_text())
    data["rows"] = [dict(zip(data["features"], row, strict=True)) for row in data["inputs"]]
    return data
