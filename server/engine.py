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
                          prefix_cache_mb: float | None = None, threads: int | None = None, spin_wait: bool = True,
                          stream_interval_s: float = 0.0) -> EngineFactory:
    """`spin_wait`: ONNX Runtime's workers spin between a call's ops (they stop when the call
    returns, so the HTTP threads get the cores between steps). Without it every op wakes a sleeping
    worker. The decoder's spinning, demo bundle, 2 cores, two servers measured in alternation
    (256-token answers to new images): tokens/s +20-24 % at 1 concurrent, +9-23 % at 16; chat
    workload at 16 +19-57 %; 2-token answers at 16 within noise (the vision call's figures are in
    backends/onnxruntime.py).
    `stream_interval_s`: AsyncEngine's per-stream pacing while several requests stream."""
    limits: dict[str, Any] = {
        k: v for k, v in (("max_queue", max_queue), ("kv_cache_mb", kv_cache_mb),
                          ("prefix_cache_mb", prefix_cache_mb), ("threads", threads)) if v is not None
    }
    limits["spin_wait"] = spin_wait

    def build() -> Engine:
        from edgevlm.runtime.async_engine import AsyncEngine

        return AsyncEngine.from_bundle(bundle, stream_interval_s=stream_interval_s, **limits)

    return build
