"""/openapi.json, generated from the pydantic schemas the endpoints validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from edgevlm import __version__
from edgevlm.server.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorBody,
    ModelCard,
    ModelList,
    VQARequest,
    VQAResponse,
)

REF = "#/components/schemas/{model}"
ERRORS = {"400", "401", "404", "413", "429", "503"}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=ref)}}}


def _errors() -> dict[str, Any]:
    return {code: {"description": "error", "content": _json("ErrorBody")} for code in sorted(ERRORS)}


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        ChatCompletionRequest,
        ChatCompletion,
        ChatCompletionChunk,
        ModelList,
        ModelCard,
        VQARequest,
    ]
    models += [VQAResponse, ErrorBody]
    _, schemas = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    chat = {
        "summary": "Chat completion (OpenAI-compatible); stream=true answers as server-sent events",
        "requestBody": {"required": True, "content": _json("ChatCompletionRequest")},
        "responses": {
            "200": {
                "description": "a completion, or text/event-stream of ChatCompletionChunk then [DONE]",
                "content": {**_json("ChatCompletion"), "text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors(),
        },
    }
    plain = {"responses": {"200": {"description": "ok"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgevlm", "version": __version__},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {"post": chat},
            "/api/v1/chat/completions": {"post": chat},
            "/v1/models": {"get": {"responses": {"200": {"description": "models", "content": _json("ModelList")}}}},
            "/vqa": {
                "post": {
                    "summary": "One question about one image",
                    "requestBody": {"required": True, "content": _json("VQARequest")},
                    "responses": {
                        "200": {"description": "answer", "content": _json("VQAResponse")},
                        **_errors(),
                    },
                }
            },
            "/health": {"get": {"summary": "liveness", "security": [], **plain}},
            "/ready": {"get": {"summary": "200 once the model is loaded and warmed up, else 503", "security": []}},
            "/metrics": {"get": {"summary": "Prometheus metrics", **plain}},
        },
    }
