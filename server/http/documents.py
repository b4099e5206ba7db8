"""The documents a served model answers with, rendered once when it loads: ``/metadata`` and ``/openapi.json``."""

from __future__ import annotations

import orjson

from common.model.loader import Model
from server.config.settings import Settings
from server.core.served import ServedModel
from server.http.openapi import build_openapi
from server.monitoring.drift import DriftWindow
from server.monitoring.request_log import ModelLog, ModelTag, RequestLog


def serve_model(model: Model, settings: Settings, request_log: RequestLog | None) -> ServedModel:
    """Prepare ``model`` for the handlers: render its documents once."""
    info = model.info
    log = request_log.for_model(ModelTag(info.features, info.version, info.threshold)) if request_log else None
    return _served(model, settings, log)


def _served(model: Model, settings: Settings, request_log: ModelLog | None) -> ServedModel:
    info = model.info
    metadata = orjson.dumps(
        {
            "model_version": info.version,
            "trained_at": info.trained_at,
            "feature_set": info.feature_set,
            "features": list(info.features),
            "feature_schema": [
                {"name": name, "description": description, "unit": unit, "minimum": minimum}
                for name, description, unit, minimum in zip(
                    info.features, info.descriptions, info.units, info.minimums, strict=True
                )
            ],
            "threshold": info.threshold,
            "threshold_rule": "churn = churn_probability >= threshold",
            "metrics": info.test_metrics,
            "sha256": info.sha256,
            "size_bytes": info.size_bytes,
            "node_count": info.node_count,
            "input_name": info.input_name,
            "limits": {"max_batch": settings.max_batch, "max_body_bytes": settings.max_body_bytes},
            "explanations": (
                {
                    "available": True,
                    "method": "exact path-dependent TreeSHAP of P(churn)",
                    "per_leaf_tables": model.explainer.tabulated,
                    "base_value": model.explainer.base_value,
                }
                if model.explainer is not None
                else {"available": False, "reason": model.explain_unavailable}
            ),
        }
    )
    openapi = orjson.dumps(build_openapi(info, settings, model.n_classes))
    drift = None
    if model.drift_columns is not None:  # compared against this model's own training data
        drift = DriftWindow(model.drift_columns, settings.drift_slots, settings.drift_slot_seconds, info.threshold)
    return ServedModel(model, settings.max_batch, request_log, metadata, openapi, drift)
