"""What a scoring run reports: users scored, where, and where the time went."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(slots=True)
class RunSummary:
    engine: str
    out: str
    users: int = 0
    churners: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    estimate: dict[str, float] | None = None  # performance expected from the scores, before labels (CBPE)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the block's wall time to ``stage`` (a stage may be timed in many pieces)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def line(self) -> str:
        stages = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in self.seconds.items())
        share = self.churners / self.users if self.users else 0.0
        expected = f"; estimated ROC-AUC {self.estimate['roc_auc']:.3f} before labels" if self.estimate else ""
        return (
            f"scored {self.users} users on {self.engine} ({share:.1%} flagged churn{expected}; {stages}) -> {self.out}"
        )
