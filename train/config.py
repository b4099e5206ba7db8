"""The training run's configuration, filled from CLI flags and written into every artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.features import DEFAULT_FEATURE_SET, FEATURE_SETS


@dataclass(frozen=True, slots=True)
class TrainConfig:
    events: Path
    out: Path = Path("artifacts")
    assets: Path | None = None  # the report (plots, model card); None: <out>/report
    user_col: str = "user_id"
    time_col: str = "event_time"
    session_col: str | None = None  # None: sessionize by a 30-minute gap
    revenue_col: str | None = None  # None: revenue is 0
    cutoff: datetime | None = None  # None: last event time minus label_days
    label_days: int = 30
    feature_set: str = DEFAULT_FEATURE_SET
    seed: int = 7
    test_size: float = 0.2
    cv_folds: int = 3
    auc_tolerance: float = 0.002  # prefer the smallest forest within this much of the best CV ROC-AUC
    shap_rows: int = 200

    def __post_init__(self) -> None:
        if self.label_days < 1:
            raise ValueError(f"--label-days must be at least 1 (got {self.label_days})")
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test size must be between 0 and 1 (got {self.test_size})")
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {self.feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
        if self.cv_folds < 2:
            raise ValueError(f"cv folds must be at least 2 (got {self.cv_folds})")

    @property
    def report_dir(self) -> Path:
        return self.assets if self.assets is not None else self.out / "report"

    def to_json(self) -> dict[str, Any]:
        """The configuration as JSON-ready values."""
        return {
            k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(self).items()
        }
