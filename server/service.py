"""The running service: config, metrics and the engine once it has loaded and warmed up."""

from __future__ import annotations

import logging
import time

import anyio
from PIL import Image

from edgevlm.runtime.types import (
    EngineOverloaded,
    EngineStats,
    EngineStopped,
    GenerationRequest,
    ImagePart,
    Message,
    RequestRejected,
    SamplingParams,
    TextPart,
)
from edgevlm.server.config import ServerConfig
from edgevlm.server.engine import Engine, EngineFactory, EngineStream
from edgevlm.server.errors import BadRequest, NotFound, Overloaded, Unavailable
from edgevlm.server.metrics import Metrics

log = logging.getLogger("edgevlm.server")


def warmup_request() -> GenerationRequest:
    """One image and one token: runs the vision tower, prefill and a decode step once."""
    image = Image.new("RGB", (112, 112), (255, 255, 255))
    message = Message("user", (ImagePart(image), TextPart("Describe the image.")))
    return GenerationRequest("warmup", (message,), SamplingParams(max_tokens=1))


class Service:
    def __init__(self, config: ServerConfig, factory: EngineFactory) -> None:
        self.config = config
        self.metrics = Metrics()
        self.created = int(time.time())
        self._factory = factory
        self._engine: Engine | None = None
        self._ready = False
        self.load_error: str | None = None
        self.metrics.watch_engine(self.stats)

    @property
    def ready(self) -> bool:
        return self._ready

    async def load(self) -> None:
        started = time.perf_counter()
        try:
            engine = await anyio.to_thread.run_sync(self._factory, abandon_on_cancel=True)
            self._engine = engine
            await engine.start()
            await self._warm_up(engine)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("engine failed to load")
            return
        self._ready = True
        log.info("engine ready in %.1fs, serving model %r, KV cache for %d tokens", time.perf_counter() - started,
                 self.config.model_name, engine.stats().kv_tokens_total)

    async def _warm_up(self, engine: Engine) -> None:
        stream = engine.submit(warmup_request())
        try:
            async for event in stream:
                if event.finish_reason == "error":
                    raise RuntimeError(f"warm-up generation failed: {event.error}")
        finally:
            await stream.aclose()

    async def close(self) -> None:
        self._ready = False
        if self._engine is not None:
            with anyio.CancelScope(shield=True):
                await self._engine.stop(self.config.drain_timeout_s)

    def stats(self) -> EngineStats | None:
        return self._engine.stats() if self._engine is not None and self._ready else None

    def check_model(self, name: str) -> None:
        if name != self.config.model_name:
            raise NotFound(f"The model {name!r} does not exist", param="model", code="model_not_found")

    def submit(self, request: GenerationRequest) -> EngineStream:
        if self._engine is None or not self._ready:
            reason = f"Model failed to load: {self.load_error}" if self.load_error else "Model is loading"
            raise Unavailable(reason, retry_after=self.config.retry_after_s)
        try:
            return self._engine.submit(request)
        except EngineOverloaded as exc:
            raise Overloaded(f"Server busy: {exc}", retry_after=exc.retry_after) from exc
        except EngineStopped as exc:
            raise Unavailable(f"Server is shutting down: {exc}", code="shutting_down", retry_after=5) from exc
        except RequestRejected as exc:
            raise BadRequest(str(exc), code="request_rejected") from exc
