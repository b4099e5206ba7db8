"""What one worker's pipeline and doors share: settings, metrics, the served model, keys, drain state, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from server.config.keys import KeyRing
from server.config.settings import Settings
from server.core.errors import NotReady
from server.core.limits import Admission, BodyBudget
from server.core.served import ServedModel
from server.monitoring.metrics import Metrics
from server.monitoring.request_log import RequestLog
from server.monitoring.shadow import Shadow
from server.monitoring.tracing import Tracer


class Swapper(Protocol):
    """What the admin route asks of the worker's model swapper (``server.ops.swap``)."""

    async def admin_swap(self, path: Path, sha256: str, force: bool) -> tuple[ServedModel, dict[str, str]]: ...

    async def admin_shadow(
        self, path: Path | None, sha256: str, sample: float
    ) -> tuple[Shadow | None, dict[str, str]]: ...


@dataclass(slots=True)
class ServerState:
    settings: Settings
    metrics: Metrics
    served: ServedModel | None = None
    draining: bool = False
    keys: KeyRing | None = None  # API keys, when PULSE_API_KEYS_FILE is set
    request_log: RequestLog | None = None  # what follows an answer (the log, the shadow); set by the lifespan
    swapper: Swapper | None = None  # set once the lifespan has started
    tracer: Tracer | None = None  # OpenTelemetry, when an OTEL_* variable turns it on; set by the lifespan
    admission: Admission = field(init=False)
    body_budget: BodyBudget = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_in_flight, self.metrics)
        self.body_budget = BodyBudget(self.settings.max_pending_body_bytes, self.metrics.rejected)

    @property
    def ready(self) -> bool:
        return self.served is not None and not self.draining

    def serve(self, served: ServedModel) -> None:
        """Serve ``served`` from the next request on, and report it (model info, drift window) in the metrics."""
        info = served.info
        self.metrics.info = {"version": info.version, "sha256": info.sha256, "features": ",".join(info.features)}
        self.metrics.drift = served.drift
        self.metrics.test_roc_auc = info.test_metrics.get("roc_auc")
        self.served = served

    def require_model(self) -> ServedModel:
        """The served model, or 503 while it is still loading."""
        if self.served is None:
            raise NotReady("model not loaded yet")
        return self.served
