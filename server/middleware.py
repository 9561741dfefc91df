"""Pure ASGI middleware: API-key check and one log line per request."""

from __future__ import annotations

import hmac
import logging
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgevlm.server.errors import Unauthorized, error_response

log = logging.getLogger("edgevlm.server.access")

# Open without a key: probes, and the static web page (which asks the user for the key).
OPEN_PATHS = frozenset({"/", "/health", "/ready", "/favicon.ico", "/api/config"})
OPEN_PREFIXES = ("/static/",)


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = bearer_token(Headers(scope=scope))
        if presented is None:
            error = Unauthorized("Missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        elif not hmac.compare_digest(presented.encode(), self._key):
            error = Unauthorized("Incorrect API key")
        else:
            await self.app(scope, receive, send)
            return
        response = error_response(error)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


class AccessLogMiddleware:
    """`METHOD PATH STATUS TIME` plus, for generations, id, finish, tokens and TTFT."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            status = status or 500
            raise
        finally:
            elapsed = time.perf_counter() - started
            generation = scope.get("state", {}).get("generation")
            extra = f" {generation.log_fields()}" if generation is not None else ""
            log.info("%s %s %s %.0fms%s", scope["method"], scope["path"], status or "-", elapsed * 1000, extra)
