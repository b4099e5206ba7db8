"""The OpenAPI document and the offline Swagger UI page, both derived from the loaded model."""

from __future__ import annotations

import math
from typing import Any

from server.model import ModelInfo
from server.settings import Settings
from server.validation import FLOAT32_MAX

API_VERSION = "1.0.0"

DOCS_HTML = b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ML-PulseChecker API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null,
                                 deepLinking: true, tryItOutEnabled: true});
  </script>
</body>
</html>
"""


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def build_openapi(info: ModelInfo, settings: Settings) -> dict[str, Any]:
    """OpenAPI 3.0 (what the bundled Swagger UI 4 renders): the request fields are the model's features, in order."""
    properties: dict[str, Any] = {}
    for name, minimum, description in zip(info.features, info.minimums, info.descriptions, strict=True):
        prop: dict[str, Any] = {"type": "number", "maximum": FLOAT32_MAX, "description": description or name}
        if math.isfinite(minimum):
            prop["minimum"] = minimum
        properties[name] = prop
    features = {"$ref": "#/components/schemas/ChurnFeatures"}
    prediction = {"$ref": "#/components/schemas/Prediction"}
    v2_error = {
        "description": "V2 protocol error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2Error"}}},
    }
    model_path = {
        "name": "model_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [settings.model_name]},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ML-PulseChecker",
            "version": API_VERSION,
            "description": f"Churn predictions from model `{info.version}` (trained {info.trained_at}). "
            f"`churn` is `churn_probability >= {info.threshold:.6g}`.",
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Churn probability for one user, or for a batch of users",
                    "operationId": "predict",
                    "requestBody": {
                        "required": True,
                        **_json_body(
                            {
                                "oneOf": [
                                    features,
                                    {"type": "array", "items": features, "minItems": 1, "maxItems": settings.max_batch},
                                ]
                            }
                        ),
                    },
                    "responses": {
                        "200": {
                            "description": "One result per input object, in order",
                            **_json_body({"oneOf": [prediction, {"type": "array", "items": prediction}]}),
                        },
                        "400": _error("Malformed JSON"),
                        "413": _error("Body or batch too large"),
                        "415": _error("Content-Type is not application/json"),
                        "422": {
                            "description": "Invalid fields",
                            **_json_body({"$ref": "#/components/schemas/ValidationError"}),
                        },
                        "503": _error("Model not loaded yet"),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "Alive",
                            **_json_body(
                                {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}}
                            ),
                        }
                    },
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness: the model is loaded and verified",
                    "operationId": "ready",
                    "responses": {"200": {"description": "Ready"}, "503": _error("Not ready")},
                }
            },
            "/metadata": {
                "get": {
                    "summary": "The served model",
                    "operationId": "metadata",
                    "responses": {"200": {"description": "Version, features, threshold, metrics"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v2/models/{model_name}/infer": {
                "post": {
                    "summary": "Open Inference Protocol V2 inference",
                    "operationId": "v2_infer",
                    "parameters": [model_path],
                    "requestBody": {"required": True, **_json_body({"$ref": "#/components/schemas/V2Request"})},
                    "responses": {
                        "200": {"description": "Probabilities [N, 2]"},
                        "400": v2_error,
                        "404": v2_error,
                        "413": v2_error,
                        "415": v2_error,
                        "503": v2_error,
                    },
                }
            },
            "/v2/models/{model_name}": {
                "get": {
                    "summary": "V2 model metadata",
                    "operationId": "v2_model",
                    "parameters": [model_path],
                    "responses": {"200": {"description": "Metadata"}, "404": v2_error, "503": v2_error},
                }
            },
            "/v2/models/{model_name}/ready": {
                "get": {
                    "summary": "V2 model readiness",
                    "operationId": "v2_model_ready",
                    "parameters": [model_path],
                    "responses": {"200": {"description": "Ready"}, "404": v2_error, "503": v2_error},
                }
            },
            "/v2/health/live": {
                "get": {
                    "summary": "V2 liveness",
                    "operationId": "v2_live",
                    "responses": {"200": {"description": "Live"}},
                }
            },
            "/v2/health/ready": {
                "get": {
                    "summary": "V2 readiness",
                    "operationId": "v2_ready",
                    "responses": {"200": {"description": "Ready"}, "503": v2_error},
                }
            },
            "/v2": {
                "get": {
                    "summary": "V2 server metadata",
                    "operationId": "v2_server",
                    "responses": {"200": {"description": "Server metadata"}},
                }
            },
        },
        "components": {
            "schemas": {
                "ChurnFeatures": {
                    "type": "object",
                    "properties": properties,
                    "required": list(info.features),
                    "additionalProperties": False,
                    "example": info.example,
                },
                "Prediction": {
                    "type": "object",
                    "required": ["churn_probability", "churn", "threshold", "model_version"],
                    "properties": {
                        "churn_probability": {"type": "number", "minimum": 0, "maximum": 1},
                        "churn": {"type": "boolean"},
                        "threshold": {"type": "number"},
                        "model_version": {"type": "string"},
                    },
                },
                "Error": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
                "ValidationError": {
                    "type": "object",
                    "required": ["detail"],
                    "properties": {
                        "detail": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["loc", "msg", "type"],
                                "properties": {
                                    "loc": {
                                        "type": "array",
                                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                                    },
                                    "msg": {"type": "string"},
                                    "type": {"type": "string"},
                                },
                            },
                        }
                    },
                },
                "V2Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "V2Request": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string", "enum": [info.input_name]},
                                    "shape": {
                                        "type": "array",
                                        "items": {"type": "integer", "minimum": 1},
                                        "minItems": 2,
                                        "maxItems": 2,
                                    },
                                    "datatype": {"type": "string", "enum": ["FP32"]},
                                    "data": {"type": "array"},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                        },
                    },
                },
            }
        },
    }
