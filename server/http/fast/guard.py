"""Whether the installed uvicorn is one the fast connection path was built for.

The fast path (:mod:`server.http.fast.protocol`) subclasses uvicorn's httptools protocol and reads its private
internals. Rather than let a uvicorn release break every deployment, start-up checks the version range it was built
and tested on and every private name it touches; outside them the server runs uvicorn's own protocol (the stock
mode: correct, only slower) and says why in one log line.
"""

from __future__ import annotations

from importlib import metadata
from types import CodeType

BUILT_FOR = ((0, 54), (0, 56))  # uvicorn versions in [low, high): the ones the fast path was tested on

# Methods of HttpToolsProtocol the fast path overrides or calls.
PROTOCOL_METHODS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
    "_unset_keepalive_if_required",
    "_unsupported_upgrade_warning",
)
# Attributes of the protocol and of its request cycle it reads or writes, as uvicorn's code assigns them.
PROTOCOL_ATTRIBUTES = (
    "parser",
    "cycle",
    "connections",
    "tasks",
    "server_state",
    "app_state",
    "asgi_version",
    "root_path",
    "transport",
    "flow",
    "server",
    "client",
    "scheme",
    "headers",
    "expect_100_continue",
    "scope",
    "url",
    "loop",
)
CYCLE_ATTRIBUTES = (
    "more_body",
    "response_started",
    "response_complete",
    "keep_alive",
    "disconnected",
    "message_event",
    "on_response",
)


def fast_path_unavailable() -> str | None:
    """``None`` when the fast path can run on the installed uvicorn, else the reason it cannot (one line)."""
    try:
        version = metadata.version("uvicorn")
        from uvicorn.protocols.http import httptools_impl
        from uvicorn.server import ServerState
    except (ImportError, metadata.PackageNotFoundError) as exc:  # httptools missing, or a uvicorn without it
        return f"uvicorn's httptools protocol cannot be imported ({exc})"
    low, high = BUILT_FOR
    if not low <= _release(version) < high:
        return f"uvicorn {version} is outside the range the fast path was built for ({_dotted(low)} to {_dotted(high)})"
    protocol, cycle = httptools_impl.HttpToolsProtocol, getattr(httptools_impl, "RequestResponseCycle", None)
    missing = [f"HttpToolsProtocol.{name}" for name in PROTOCOL_METHODS if not callable(getattr(protocol, name, None))]
    assigned = _assigned(protocol)
    missing += [f"HttpToolsProtocol.{name}" for name in PROTOCOL_ATTRIBUTES if name not in assigned]
    cycle_assigned = _assigned(cycle) if cycle is not None else set()
    missing += [f"RequestResponseCycle.{name}" for name in CYCLE_ATTRIBUTES if name not in cycle_assigned]
    if not isinstance(getattr(httptools_impl, "STATUS_LINE", None), dict):
        missing.append("httptools_impl.STATUS_LINE")
    if "default_headers" not in _assigned(ServerState):
        missing.append("ServerState.default_headers")
    if missing:
        return f"uvicorn {version} lacks what the fast path uses: {', '.join(missing)}"
    return None


def _assigned(cls: type) -> set[str]:
    """The attribute names a class's own methods store on ``self`` (or anything): its code's names."""
    names: set[str] = set()
    for value in vars(cls).values():
        code = getattr(value, "__code__", None)
        if isinstance(code, CodeType):
            names.update(code.co_names)
    return names


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _dotted(release: tuple[int, int]) -> str:
    return ".".join(map(str, release))
