"""The OpenAPI document, derived from the route table and the loaded model: the request fields are the model's
features, in order, with their descriptions and minimums."""

from __future__ import annotations

import math
from typing import Any

from common.model.loader import ModelInfo
from server.config.settings import Settings
from server.core.validation import FLOAT32_MAX
from server.http.routes import ENDPOINTS, Endpoint, Reply

API_VERSION = "1.0.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _array(items: dict[str, Any], **bounds: int) -> dict[str, Any]:
    return {"type": "array", "items": items, **bounds}


STRING: dict[str, Any] = {"type": "string"}
NUMBER: dict[str, Any] = {"type": "number"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}


def _reply(reply: Reply) -> dict[str, Any]:
    schema = _ref(reply.schema) if reply.schema else STRING
    return {"description": reply.description, "content": {reply.media_type: {"schema": schema}}}


def _query_parameter(name: str, info: ModelInfo) -> dict[str, Any]:
    if name != "explain":
        raise ValueError(f"no OpenAPI description for query parameter {name!r}")
    return {
        "name": "explain",
        "in": "query",
        "required": False,
        "description": "Add the K strongest reasons (exact TreeSHAP contributions to P(churn)) and the base value "
        "to each result. Absent: the plain result.",
        "schema": {"type": "integer", "minimum": 1, "maximum": len(info.features)},
    }


BEARER = "apiKey"


def _operation(endpoint: Endpoint, settings: Settings, info: ModelInfo) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": endpoint.summary,
        "operationId": endpoint.operation_id,
        "responses": {str(status): _reply(reply) for status, reply in endpoint.responses.items()},
    }
    if settings.api_keys_file is not None and endpoint.key_scope is not None:
        operation["security"] = [{BEARER: []}]
        error = "V2Error" if endpoint.v2 else "Error"
        operation["responses"].setdefault("401", _reply(Reply("No valid API key (see WWW-Authenticate)", error)))
        operation["responses"].setdefault("403", _reply(Reply(f"The key's scope is not {endpoint.key_scope}", error)))
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": [info.version if name == "model_version" else settings.model_name]},
        }
        for name in endpoint.path_params
    ] + [_query_parameter(name, info) for name in endpoint.query]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.request_schema:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(endpoint.request_schema)}},
        }
    return operation


def _feature_properties(info: ModelInfo) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, minimum, description, unit in zip(
        info.features, info.minimums, info.descriptions, info.units, strict=True
    ):
        text = (description or name) + (f" ({unit})" if unit else "")
        prop: dict[str, Any] = {"type": "number", "maximum": FLOAT32_MAX, "description": text}
        if math.isfinite(minimum):
            prop["minimum"] = minimum
        properties[name] = prop
    return properties


def _schemas(info: ModelInfo, settings: Settings, n_classes: int) -> dict[str, Any]:
    reason = _object(
        ["feature", "value", "contribution"],
        feature={"type": "string", "enum": list(info.features)},
        value=NUMBER,
        contribution=NUMBER,
    )
    prediction = _object(
        ["churn_probability", "churn", "threshold", "model_version"],
        churn_probability={"type": "number", "minimum": 0, "maximum": 1},
        churn=BOOLEAN,
        threshold=NUMBER,
        model_version=STRING,
        base_value={"type": "number", "description": "with `explain`: the expected P(churn) over training"},
        reasons=_array(reason)
        | {
            "description": "with `explain=K`: the K largest |contributions|, largest first; "
            "all contributions and base_value sum to churn_probability"
        },
    )
    loc = _array({"anyOf": [STRING, {"type": "integer"}]})
    input_tensor = _object(
        ["name", "shape", "datatype", "data"],
        name={"type": "string", "enum": [info.input_name]},
        shape=_array({"type": "integer", "minimum": 1}, minItems=2, maxItems=2),
        datatype={"type": "string", "enum": ["FP32"]},
        data={"type": "array"},
    )
    output_tensor = _object(
        ["name", "datatype", "shape"],
        name={"type": "string", "enum": [info.probability_output, "contributions"]},
        datatype={"type": "string", "enum": ["FP32"]},
        shape=_array({"type": "integer"}, minItems=2, maxItems=2),
        data=_array(NUMBER),
        parameters=_object(
            [],
            binary_data_size={
                "type": "integer",
                "description": "instead of `data`: the output's little-endian FP32 bytes follow the JSON",
            },
        ),
    )
    output_tensor["description"] = (
        f"'{info.probability_output}': P(class) for each of the {n_classes} classes, shape [N, {n_classes}]; "
        "'contributions' (with `explain`): SHAP values, shape [N, features]"
    )
    return {
        "ChurnFeatures": {
            "type": "object",
            "properties": _feature_properties(info),
            "required": list(info.features),
            "additionalProperties": False,
            "example": info.example,
        },
        "ChurnColumns": {
            "type": "object",
            "description": "a columnar batch: one list per feature, all of one length (the fastest JSON batch)",
            "properties": {
                name: _array(prop, minItems=1, maxItems=settings.max_batch)
                for name, prop in _feature_properties(info).items()
            },
            "required": list(info.features),
            "additionalProperties": False,
        },
        "PredictRequest": {
            "oneOf": [
                _ref("ChurnFeatures"),
                _array(_ref("ChurnFeatures"), minItems=1, maxItems=settings.max_batch),
                _ref("ChurnColumns"),
            ]
        },
        "Prediction": prediction,
        "ColumnPredictions": _object(
            ["churn_probability", "churn", "threshold", "model_version"],
            churn_probability=_array({"type": "number", "minimum": 0, "maximum": 1}),
            churn=_array(BOOLEAN),
            threshold=NUMBER,
            model_version=STRING,
        ),
        "PredictResponse": {"oneOf": [_ref("Prediction"), _array(_ref("Prediction")), _ref("ColumnPredictions")]},
        "Health": _object(["status"], status={"type": "string", "enum": ["ok"]}),
        "SwapRequest": _object(
            ["path"],
            path={"type": "string", "description": "model.onnx path on the server's filesystem"},
            sha256={"type": "string", "description": "expected sha256 (default: <path>.sha256 when present)"},
            force={"type": "boolean", "description": "swap even if the input features differ (clients break)"},
        ),
        "SwapResult": _object(
            ["model_version", "sha256", "previous_version", "workers"],
            model_version=STRING,
            sha256=STRING,
            previous_version=STRING,
            workers={"type": "object", "additionalProperties": STRING, "description": "each live worker's version"},
        ),
        "ShadowRequest": _object(
            ["path"],
            path={"type": "string", "description": "candidate model.onnx path in the model folder"},
            sha256={"type": "string", "description": "expected sha256 (default: <path>.sha256 when present)"},
            sample={"type": "number", "description": "share of requests it scores (default PULSE_SHADOW_SAMPLE)"},
        ),
        "ShadowResult": _object(
            ["shadow_version", "sha256", "sample", "workers"],
            shadow_version=STRING,
            sha256=STRING,
            sample=NUMBER,
            workers={"type": "object", "additionalProperties": STRING, "description": "each live worker's shadow"},
        ),
        "Readiness": _object(
            ["status"], status={"type": "string", "enum": ["ready", "loading", "draining"]}, model_version=STRING
        ),
        "Metadata": _object(
            ["model_version", "features", "threshold"], model_version=STRING, threshold=NUMBER, features=_array(STRING)
        ),
        "Object": {"type": "object"},
        "Error": _object(["detail"], detail=STRING),
        "ValidationError": _object(
            ["detail"], detail=_array(_object(["loc", "msg", "type"], loc=loc, msg=STRING, type=STRING))
        ),
        "V2Error": _object(["error"], error=STRING),
        "V2Live": _object(["live"], live=BOOLEAN),
        "V2Ready": _object(["ready"], ready=BOOLEAN),
        "V2ModelReady": _object(["name", "ready"], name=STRING, ready=BOOLEAN),
        "V2Request": _object(
            ["inputs"],
            id=STRING,
            parameters=_object(
                [],
                explain=BOOLEAN | {"description": "add the output 'contributions' [N, features]"},
                binary_data_output=BOOLEAN
                | {"description": "every output as raw bytes after the JSON (binary tensor extension)"},
            ),
            inputs=_array(input_tensor, minItems=1, maxItems=1),
            outputs=_array(
                _object(
                    ["name"],
                    name=STRING,
                    parameters=_object([], binary_data=BOOLEAN | {"description": "this output as raw bytes"}),
                )
            ),
        ),
        "V2Response": _object(
            ["model_name", "outputs"],
            model_name=STRING,
            model_version=STRING,
            id=STRING,
            outputs=_array(output_tensor, minItems=1, maxItems=2),
        ),
    }


def build_openapi(info: ModelInfo, settings: Settings, n_classes: int) -> dict[str, Any]:
    """OpenAPI 3.0 (what the bundled Swagger UI 4 renders) for every endpoint in the route table."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, settings, info)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ML-PulseChecker",
            "version": API_VERSION,
            "description": f"Churn predictions from model `{info.version}` (trained {info.trained_at}). "
            f"`churn` is `churn_probability >= {info.threshold:.6g}`.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(info, settings, n_classes),
            # Swagger UI's Authorize button sends the key with every request it makes.
            **({"securitySchemes": {BEARER: {"type": "http", "scheme": "bearer"}}} if settings.api_keys_file else {}),
        },
    }
