"""Who may call what, and what counts as in flight: one rule for every door, over HTTP paths and gRPC methods alike
(a gRPC method is named by its path, ``/inference.GRPCInferenceService/ModelInfer``).

With API keys on, a route needs a key of its scope (an ``admin`` key grants every scope): probes and the server's own
description are open, ``/admin/...`` needs ``admin``, ``/metrics`` needs ``metrics`` (what a Prometheus scraper is
given), everything else (scoring, the model's metadata, the OpenAPI document) ``predict``.

``PULSE_MAX_IN_FLIGHT`` counts the requests that need ``predict``: the traffic. Probes, scrapes and admin calls are
never shed and hold no place, so an operator can look at and act on a worker that is full (an admin swap may wait
for up to 30 s: counted, it would halve a bound of 2 for that long).
"""

from __future__ import annotations

GRPC_SERVICE = "inference.GRPCInferenceService"

PROBES = frozenset({b"/health", b"/ready", b"/v2/health/live", b"/v2/health/ready"})  # answered on the connection
OPEN = frozenset(
    {
        *(path.decode() for path in PROBES),
        "/v2",  # the V2 server metadata: name, version, extensions
        "/docs",  # Swagger UI's page (the document it fetches needs a key)
        *(f"/{GRPC_SERVICE}/{method}" for method in ("ServerLive", "ServerReady", "ServerMetadata")),
    }
)
ADMIN_PREFIX = "/admin/"
METRICS = "/metrics"


def needed_scope(route: str) -> str | None:
    """The key scope ``route`` needs when keys are on; ``None``: open to anyone."""
    if route in OPEN:
        return None
    if route.startswith(ADMIN_PREFIX):
        return "admin"
    if route == METRICS:
        return "metrics"
    return "predict"


def counts_in_flight(route: str) -> bool:
    """Whether a request on ``route`` takes a place under ``PULSE_MAX_IN_FLIGHT`` (and may be shed for want of one)."""
    return needed_scope(route) == "predict"


def granted(key_scope: str, needed: str) -> bool:
    """Whether a key of ``key_scope`` may call a route that needs ``needed``."""
    return key_scope == needed or key_scope == "admin"
