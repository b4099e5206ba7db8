"""The fast path's guard: it accepts the uvicorn the serve extra installs, and names what it refuses."""

from __future__ import annotations

import pytest
from uvicorn.protocols.http import httptools_impl

from server.http.fast import guard


def test_the_installed_uvicorn_runs_the_fast_path() -> None:
    # The serve extra's uvicorn range and BUILT_FOR must agree: otherwise every server quietly runs stock.
    assert guard.fast_path_unavailable() is None


def test_a_release_outside_the_range_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard.metadata, "version", lambda name: "0.99.1")
    reason = guard.fast_path_unavailable()
    assert reason is not None and "uvicorn 0.99.1 is outside the range" in reason


def test_a_private_name_gone_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(httptools_impl.HttpToolsProtocol, "on_url")
    monkeypatch.delattr(httptools_impl, "STATUS_LINE")
    reason = guard.fast_path_unavailable()
    assert reason is not None
    assert "HttpToolsProtocol.on_url" in reason and "httptools_impl.STATUS_LINE" in reason
