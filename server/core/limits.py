"""Per-worker bounds on the work requests may hold: how many are in flight and the memory of bodies being read. Each
bound is written once here; every door (the connection's own path, the ASGI app, gRPC) asks the same object. (How
much batch work runs before the event loop polls its sockets again is the coalescer's: one turn at a time.)"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from server.core.errors import Overloaded

if TYPE_CHECKING:
    from server.monitoring.metrics import Metrics


class Admission:
    """``PULSE_MAX_IN_FLIGHT``: the requests this worker holds, whichever door they came by, from their arrival to
    their answer. A door admits a request before it reads its body and releases it once the answer is written (or
    its client is gone); one too many is refused at once, never queued. Probes are never asked about: they are
    answered whatever the load."""

    __slots__ = ("limit", "metrics")

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit  # 0: no bound
        self.metrics = metrics  # the in-flight gauge is this object's to keep

    def admit(self) -> bool:
        """Hold one more request if the bound allows it; a refusal is counted (``overloaded``, 503)."""
        metrics = self.metrics
        if self.limit and metrics.in_flight >= self.limit:
            metrics.rejected[("overloaded", 503)] += 1
            return False
        metrics.in_flight += 1
        return True

    def release(self) -> None:
        self.metrics.in_flight -= 1


class BodyBudget:
    """The bytes of request bodies this worker is holding while it reads them, bounded: a flood of slow or
    half-sent bodies gets 503s instead of the worker's memory. Content-Length is reserved up front."""

    __slots__ = ("held", "limit", "rejected")

    def __init__(self, limit: int, rejected: MutableMapping[tuple[str, int], int]) -> None:
        self.limit = limit
        self.held = 0
        self.rejected = rejected  # the metrics' refusal counters

    def take(self, n: int) -> None:
        if not self.reserve(n):
            self.rejected[("body_memory", 503)] += 1
            raise Overloaded("too many request bodies being read; retry shortly")

    def hold(self, n: int) -> None:
        """Count ``n`` bytes already read (and so already allowed) until the request is answered."""
        self.held += n

    def reserve(self, n: int) -> bool:
        """Hold ``n`` bytes if they fit; whether they did (nothing is counted)."""
        if self.held + n > self.limit:
            return False
        self.held += n
        return True
