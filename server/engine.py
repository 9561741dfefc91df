"""What the server needs from an engine, as a Protocol: the runtime's AsyncEngine fits it, and so
does a small fake in the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from edgevlm.runtime.types import EngineStats, GenerationRequest, StreamEvent


class EngineStream(Protocol):
    """One request's events. Closing it early cancels the generation and frees its KV cache."""

    def __aiter__(self) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...


class Engine(Protocol):
    async def start(self) -> None: ...

    def submit(self, request: GenerationRequest) -> EngineStream:
        """Raises EngineOverloaded (queue full) or RequestRejected (can never run)."""
        ...

    def stats(self) -> EngineStats: ...

    async def stop(self, drain_timeout: float) -> None: ...


# Builds the engine (loads weights): synchronous, so the app runs it in a worker thread.
EngineFactory = Callable[[], Engine]


def bundle_engine_factory(bundle: Path, *, max_queue: int | None, kv_cache_mb: float | None,
                          prefix_cache_mb: float | None = None, spin_wait: bool = False,
                          stream_interval_s: float = 0.0) -> EngineFactory:
    """`spin_wait` off by default: the engine shares the CPU with the server's HTTP threads, and
    ONNX Runtime's spinning workers would take it from them (measured with `bench serve` on 2
    cores: mean latency at 4 concurrent 0.21 s without spinning, 0.30-0.33 s with it).
    `stream_interval_s`: AsyncEngine's per-stream pacing while several requests stream."""
    limits: dict[str, Any] = {
        k: v for k, v in (("max_queue", max_queue), ("kv_cache_mb", kv_cache_mb),
                          ("prefix_cache_mb", prefix_cache_mb)) if v is not None
    }
    limits["spin_wait"] = spin_wait

    def build() -> Engine:
        from edgevlm.runtime.async_engine import AsyncEngine

        return AsyncEngine.from_bundle(bundle, stream_interval_s=stream_interval_s, **limits)

    return build
