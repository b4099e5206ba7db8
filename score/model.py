"""The served model as a batch scorer sees it: the server's checked loader, plus the catalogue features it needs.

A model's metadata carries the SQL of every feature it was trained with. The scorer builds exactly the catalogue's
features, so it accepts a model only when each of its features is in this version's catalogue with the same SQL:
a model trained on another definition is refused, never scored on features it was not trained with (and no SQL
from a model file is ever run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.features import BY_NAME, Feature, utc_naive
from common.model.loader import Model, ModelError, model_from_bytes, read_model_bytes


class ScoreError(ValueError):
    """Bad input to a scoring or outcomes run; the message names what is wrong in one line."""


@dataclass(frozen=True, slots=True)
class ScoringSpec:
    """What every engine needs to know about the model, read once on the driver."""

    features: tuple[Feature, ...]
    threshold: float
    version: str
    sha256: str
    feature_set: str
    label_days: int | None  # the training label window, the outcome report's default
    test_metrics: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def record(self, cutoff: datetime, engine: str) -> dict[str, Any]:
        """The run record that travels with the predictions (the outcome report reads it)."""
        return {
            "cutoff": cutoff.isoformat(),
            "engine": engine,
            "model_version": self.version,
            "model_sha256": self.sha256,
            "feature_set": self.feature_set,
            "features": self.names,
            "threshold": self.threshold,
            "label_days": self.label_days,
            "test_metrics": self.test_metrics,
        }


def _catalogue_features(model: Model) -> tuple[Feature, ...]:
    try:
        schema = {item["name"]: item for item in json.loads(model.metadata.get("feature_schema", "[]"))}
    except (json.JSONDecodeError, TypeError, KeyError):
        raise ScoreError("model metadata 'feature_schema' is not a list of feature definitions") from None
    features = []
    for name in model.info.features:
        known = BY_NAME.get(name)
        if known is None:
            raise ScoreError(f"model feature {name!r} is not in this version's feature catalogue: cannot build it")
        if schema.get(name, {}).get("sql") != known.sql:
            raise ScoreError(
                f"model feature {name!r} was trained with another SQL definition than this version's: "
                "retrain the model, or score with the version that trained it"
            )
        features.append(known)
    return tuple(features)


def scoring_spec(model: Model) -> ScoringSpec:
    """The :class:`ScoringSpec` of a loaded model; :class:`ScoreError` when its features cannot be built here."""
    info = model.info
    try:
        summary = json.loads(model.metadata.get("train_summary", "{}"))
    except json.JSONDecodeError:
        raise ScoreError("model metadata 'train_summary' is not valid JSON") from None
    label_days = summary.get("label_days") if isinstance(summary, dict) else None
    return ScoringSpec(
        features=_catalogue_features(model),
        threshold=info.threshold,
        version=info.version,
        sha256=info.sha256,
        feature_set=info.feature_set,
        label_days=label_days if isinstance(label_days, int) else None,
        test_metrics=info.test_metrics,
    )


def load_for_scoring(path: Path, explain: int = 0, threads: int = 0) -> tuple[Model, ScoringSpec, bytes]:
    """Read the model once, check it as the server does (sha256 sidecar, metadata, golden rows), and return it,
    its spec and its bytes (what Spark's workers get). ``explain``: the reasons asked per user, checked here."""
    try:
        data = read_model_bytes(path)
        model = model_from_bytes(data, threads, source=f"model file {str(path)!r}")
    except ModelError as exc:
        raise ScoreError(str(exc)) from None
    n_features = len(model.info.features)
    if explain and not 1 <= explain <= n_features:
        raise ScoreError(f"--explain {explain}: the model has {n_features} features, ask for 1 to {n_features}")
    if explain and model.explainer is None:
        raise ScoreError(f"--explain: {model.explain_unavailable}")
    return model, scoring_spec(model), data


def check_cutoff(cutoff: datetime | None, first: datetime, last: datetime) -> datetime:
    """The cutoff to score at (UTC): as given, or the log's last event; refused before the log's first event."""
    if cutoff is None:
        return last
    cutoff = utc_naive(cutoff)
    if cutoff < first:
        raise ScoreError(f"cutoff {cutoff.isoformat()} is before the log's first event ({first.isoformat()})")
    return cutoff


def worker_model(data: bytes, cache: dict[str, Model], sha256: str) -> Model:
    """One model per worker process, built from the broadcast bytes the first time a partition needs it."""
    model = cache.get(sha256)
    if model is None:
        model = cache[sha256] = model_from_bytes(data, threads=1, source="broadcast model")
    return model
