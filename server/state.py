"""What the handlers share in one worker process: settings, metrics, the served model, drain state."""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import NotReady
from server.metrics import Metrics
from server.predict import ServedModel
from server.settings import Settings


@dataclass(slots=True)
class ServerState:
    settings: Settings
    metrics: Metrics
    served: ServedModel | None = None
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.served is not None and not self.draining

    def require_model(self) -> ServedModel:
        """The served model, or 503 while it is still loading."""
        if self.served is None:
            raise NotReady("model not loaded yet")
        return self.served
