"""The service's API documents: OpenAPI 2.0 (`/swagger.json`, Azure ML's shape) and OpenAPI 3 (`/openapi.json`).

`/score`'s input and output schemas come from the entry script's inference-schema decorators when
present (with their samples as examples), or from the ONNX model's inputs and outputs.
"""

from __future__ import annotations

import copy
from typing import Any

from runtimes.v2.types import TensorSpec

_JSON_TYPE = {"BOOL": "boolean", "BYTES": "string", "FP16": "number", "FP32": "number", "FP64": "number"}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "What went wrong, in one line."}},
}


def _tensor_schema(spec: TensorSpec) -> dict[str, Any]:
    leaf: dict[str, Any] = {"type": _JSON_TYPE.get(spec.datatype, "integer")}
    schema = leaf
    for _ in spec.shape or [0]:
        schema = {"type": "array", "items": schema}
    schema["description"] = f"{spec.datatype} tensor of shape {spec.shape} (-1: any size)"
    return schema


def onnx_schemas(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> tuple[dict[str, Any], dict[str, Any]]:
    """/score input and output schemas for a no-code ONNX model."""
    data = (
        _tensor_schema(inputs[0])
        if len(inputs) == 1
        else {
            "type": "object",
            "properties": {s.name: _tensor_schema(s) for s in inputs},
        }
    )
    in_schema = {"type": "object", "required": ["data"], "properties": {"data": data}}
    out_schema = {"type": "object", "properties": {s.name: _tensor_schema(s) for s in outputs}}
    return in_schema, out_schema


def _service_input(input_schema: dict[str, Any] | None) -> dict[str, Any]:
    if not input_schema:
        return {"type": "object", "description": "Free-form JSON passed to run()"}
    schema = copy.deepcopy(input_schema)
    if "type" not in schema:  # inference-schema gives {param: schema}: wrap it in an object
        schema = {"type": "object", "properties": schema}
    examples = {
        k: v["example"] for k, v in schema.get("properties", {}).items() if isinstance(v, dict) and "example" in v
    }
    if examples and "example" not in schema:
        schema["example"] = examples
    return schema


def swagger2(
    service: str, input_schema: dict[str, Any] | None, output_schema: dict[str, Any] | None, auth: bool
) -> dict[str, Any]:
    """OpenAPI 2.0 document in the layout Azure ML services publish."""
    score: dict[str, Any] = {
        "operationId": "RunMLService",
        "description": "Run web service's model and get the prediction output",
        "parameters": [
            {
                "name": "serviceInputPayload",
                "in": "body",
                "description": "The input payload for executing the real-time machine learning service.",
                "schema": {"$ref": "#/definitions/ServiceInput"},
            }
        ],
        "responses": {
            "200": {
                "description": "The service processed the input correctly and provided a result prediction, "
                "if applicable.",
                "schema": {"$ref": "#/definitions/ServiceOutput"},
            },
            "default": {
                "description": "The service failed to execute due to an error.",
                "schema": {"$ref": "#/definitions/ErrorResponse"},
            },
        },
    }
    doc: dict[str, Any] = {
        "swagger": "2.0",
        "info": {
            "title": service,
            "description": f"API specification for the Edgeport service {service}",
            "version": "1.0",
        },
        "schemes": ["http"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint to ensure the service is up at any given point.",
                    "responses": {
                        "200": {
                            "description": "If service is up and running, this response will be returned with the "
                            "content 'Healthy'",
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": {
                            "description": "The service failed to execute due to an error.",
                            "schema": {"$ref": "#/definitions/ErrorResponse"},
                        },
                    },
                }
            },
            "/score": {"post": score},
        },
        "definitions": {
            "ServiceInput": _service_input(input_schema),
            "ServiceOutput": copy.deepcopy(output_schema)
            if output_schema
            else {"description": "Whatever run() returns, as JSON"},
            "ErrorResponse": ERROR_SCHEMA,
        },
    }
    if auth:
        doc["securityDefinitions"] = {
            "Bearer": {
                "type": "apiKey",
                "name": "Authorization",
                "in": "header",
                "description": "For example: Bearer abc123",
            }
        }
        score["security"] = [{"Bearer": []}]
    return doc


def _refs_to_v3(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/definitions/", "#/components/schemas/") if k == "$ref" else _refs_to_v3(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_refs_to_v3(v) for v in node]
    return node


def openapi3(
    service: str, input_schema: dict[str, Any] | None, output_schema: dict[str, Any] | None, auth: bool
) -> dict[str, Any]:
    """The same API as OpenAPI 3.0, plus the V2 inference routes."""
    v2 = swagger2(service, input_schema, output_schema, auth)
    json_body = lambda ref: {"content": {"application/json": {"schema": {"$ref": ref}}}}  # noqa: E731
    err = {"description": "Error", **json_body("#/components/schemas/ErrorResponse")}
    security: list[dict[str, list[str]]] = [{"Bearer": []}] if auth else []
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "ServiceHealthCheck",
                "description": "Health check: 'Healthy' once init() has finished",
                "responses": {
                    "200": {"description": "Healthy", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "503": err,
                },
            }
        },
        "/score": {
            "post": {
                "operationId": "RunMLService",
                "description": "Run the model and get the prediction output",
                "security": security,
                "requestBody": {"required": True, **json_body("#/components/schemas/ServiceInput")},
                "responses": {
                    "200": {"description": "Prediction", **json_body("#/components/schemas/ServiceOutput")},
                    "default": err,
                },
            }
        },
        "/v2/health/live": {
            "get": {
                "description": "Open Inference Protocol: server live",
                "responses": {"200": {"description": "live"}},
            }
        },
        "/v2/health/ready": {
            "get": {
                "description": "Open Inference Protocol: server ready",
                "responses": {"200": {"description": "ready"}},
            }
        },
        "/v2/models/{model}/infer": {
            "post": {
                "description": "Open Inference Protocol inference (JSON tensors or the binary tensor extension)",
                "security": security,
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "Inference response"}, "default": err},
            }
        },
        "/metrics": {
            "get": {"description": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": v2["info"],
        "paths": paths,
        "components": {"schemas": _refs_to_v3(v2["definitions"])},
    }
    if auth:
        doc["components"]["securitySchemes"] = {"Bearer": {"type": "http", "scheme": "bearer"}}
    return doc
