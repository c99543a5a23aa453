"""The OpenAPI description of the HTTP port, served at /openapi.json."""

from __future__ import annotations

from typing import Any

import pellucid

_ERROR = {
    "description": "an error; `error.rows` names each bad row and feature (400), `error.limit` the body limit (413)",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_ERRORS = {
    str(code): {**_ERROR, "description": f"{what}. {_ERROR['description']}"}
    for code, what in (
        (400, "a row does not match the feature specs, or the body is not {rows: [...]}"),
        (401, "no token, or not a valid one"),
        (403, "the deployment is disabled, or the token is another deployment's"),
        (404, "no such deployment (or not the caller's)"),
        (413, "the body is larger than the server's limit"),
        (429, "too many calls in flight: retry after Retry-After seconds"),
        (502, "the model failed on a row"),
        (503, "no runner serves the deployment's model"),
        (504, "the model did not answer before the timeout"),
    )
}
_VALUE = {
    "description": "a number (numeric), a string (text, or a category), a data URI data:image/...;base64,... "
    "(image), or {shape, data} (array, data flat and row-major)",
}


def openapi_document(extra_paths: dict[str, Any]) -> dict[str, Any]:
    """The description: the deployment routes, then whatever else is mounted (`extra_paths`)."""
    deployment_id = {"name": "deployment_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pellucid HTTP API", "version": getattr(pellucid, "__version__", "0")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "status", "message"],
                            "properties": {
                                "code": {"type": "integer"},
                                "status": {"type": "string"},
                                "message": {"type": "string"},
                                "reason": {"type": "string"},
                                "limit": {"type": "integer"},
                                "rows": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "row": {"type": "integer"},
                                            "feature": {"type": "string"},
                                            "message": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        }
                    },
                },
                "Rows": {
                    "type": "object",
                    "required": ["rows"],
                    "properties": {
                        "rows": {"type": "array", "items": {"type": "object", "additionalProperties": _VALUE}}
                    },
                },
                "FeatureSpec": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "type": {"enum": ["numeric", "categorical", "text", "image", "array"]},
                        "required": {"type": "boolean"},
                        "categories": {"type": "array", "items": {"type": "string"}},
                        "width": {"type": "integer"},
                        "height": {"type": "integer"},
                        "channels": {"type": "integer"},
                        "dtype": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/deployments/{deployment_id}/forward": {
                "post": {
                    "summary": "Predict rows of named features with the deployment's model or workflow",
                    "parameters": [
                        deployment_id,
                        {
                            "name": "timeout",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number"},
                            "description": "seconds to wait for the model or workflow (default 60)",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rows"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "one output row per input row, in order: numbers as numbers, categories "
                            "as {label: probability}, images as data URIs, arrays as {shape, data}",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Rows"}}},
                        },
                        **_ERRORS,
                    },
                }
            },
            "/v1/deployments/{deployment_id}": {
                "get": {
                    "summary": "The deployment's feature specs, URL and status",
                    "parameters": [deployment_id],
                    "responses": {
                        "200": {
                            "description": "id, enabled, url, its target (model_id, or workflow_id, and version_id), "
                            "feature_specs_in, feature_specs_out",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "id": {"type": "string"},
                                            "enabled": {"type": "boolean"},
                                            "url": {"type": "string"},
                                            "model_id": {"type": "string"},
                                            "workflow_id": {"type": "string"},
                                            "version_id": {"type": "string"},
                                            "feature_specs_in": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/FeatureSpec"},
                                            },
                                            "feature_specs_out": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/FeatureSpec"},
                                            },
                                        },
                                    }
                                }
                            },
                        },
                        **{k: v for k, v in _ERRORS.items() if k in ("401", "403", "404")},
                    },
                }
            },
            **extra_paths,
        },
    }
