"""The Starlette app, built by a factory from a config and an engine factory (no global app)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgevlm.server.chat import chat_completions, vqa
from edgevlm.server.config import ServerConfig
from edgevlm.server.engine import EngineFactory
from edgevlm.server.errors import EXCEPTION_HANDLERS
from edgevlm.server.middleware import AccessLogMiddleware, APIKeyMiddleware
from edgevlm.server.openapi import openapi_document
from edgevlm.server.schemas import ModelCard, ModelList
from edgevlm.server.service import Service

log = logging.getLogger("edgevlm.server")
WEBAPP_DIR = Path(str(resources.files("edgevlm.webapp")))


def _service(request: Request) -> Service:
    return request.state.service


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    service = _service(request)
    if service.ready:
        return JSONResponse({"status": "ready", "model": service.config.model_name})
    body: dict[str, Any] = {"status": "failed" if service.load_error else "loading"}
    if service.load_error:
        body["error"] = service.load_error
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(service.config.retry_after_s)})


def _card(service: Service) -> ModelCard:
    return ModelCard(id=service.config.model_name, created=service.created)


async def list_models(request: Request) -> Response:
    return JSONResponse(ModelList(data=[_card(_service(request))]).model_dump())


async def get_model(request: Request) -> Response:
    service = _service(request)
    service.check_model(request.path_params["model"])
    return JSONResponse(_card(service).model_dump())


async def metrics(request: Request) -> Response:
    return Response(_service(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def web_config(request: Request) -> Response:
    """What the web page needs to know: model name, input limits, whether a key is required."""
    config = _service(request).config
    return JSONResponse(
        {
            "model": config.model_name,
            "max_image_bytes": config.max_image_bytes,
            "max_image_pixels": config.max_image_pixels,
            "max_images": config.max_images,
            "auth_required": config.api_key is not None,
        }
    )


# The page loads only its own files; images are data: URLs. A second line of defence behind
# rendering all model output as text.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def index(request: Request) -> Response:
    return FileResponse(WEBAPP_DIR / "index.html", headers=PAGE_HEADERS)


def routes() -> list[Route | Mount]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/config", web_config, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/api/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/vqa", vqa, methods=["POST"]),
        Mount("/static", StaticFiles(directory=WEBAPP_DIR)),
    ]


def middleware(config: ServerConfig) -> list[Middleware]:
    stack = [Middleware(AccessLogMiddleware)]
    if config.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(config.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-API-Key"],
                expose_headers=["Retry-After", "X-Request-ID"],
            )
        )
    if config.api_key is not None:
        stack.append(Middleware(APIKeyMiddleware, api_key=config.api_key))
    return stack


def create_app(config: ServerConfig, engine_factory: EngineFactory) -> Starlette:
    """The model loads in the background: /health answers at once, /ready turns 200 when warm."""
    service = Service(config, engine_factory)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as group:
            group.start_soon(service.load)
            try:
                yield {"service": service}
            finally:
                group.cancel_scope.cancel()
        await service.close()

    return Starlette(
        routes=routes(),
        middleware=middleware(config),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
