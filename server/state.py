"""What the handlers share in one worker process: settings, metrics, the served model, drain state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.asgi import BatchGate, BodyBudget
from server.errors import NotReady
from server.keys import KeyRing
from server.metrics import Metrics
from server.predict import ServedModel
from server.settings import Settings

if TYPE_CHECKING:
    from server.swap import ModelSwapper


@dataclass(slots=True)
class ServerState:
    settings: Settings
    metrics: Metrics
    served: ServedModel | None = None
    draining: bool = False
    keys: KeyRing | None = None  # API keys, when PULSE_API_KEYS_FILE is set
    swapper: ModelSwapper | None = None  # set once the lifespan has started
    body_budget: BodyBudget = field(init=False)
    batch_gate: BatchGate = field(init=False)

    def __post_init__(self) -> None:
        self.body_budget = BodyBudget(self.settings.max_pending_body_bytes, self.metrics.rejected)
        self.batch_gate = BatchGate(self.settings.batch_concurrency)

    @property
    def ready(self) -> bool:
        return self.served is not None and not self.draining

    def require_model(self) -> ServedModel:
        """The served model, or 503 while it is still loading."""
        if self.served is None:
            raise NotReady("model not loaded yet")
        return self.served
