"""asyncio front of the engine: the step loop runs in one background thread; each request gets an
async stream of StreamEvents fed through its own asyncio queue.

Threading rule: only the loop thread touches the Engine's state. `submit` (event-loop thread)
tokenizes with `Engine.prepare`, which is thread-safe, then hands the sequence over through a
locked inbox; cancellations travel the same way. Events go back with one
`call_soon_threadsafe` per step. Queue room is reserved at submit, under the same lock, so a
request accepted here never overflows the engine's queue later.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from edgevlm.runtime.engine import Engine, Event
from edgevlm.runtime.sequence import Sequence
from edgevlm.runtime.types import (
    EngineOverloaded,
    EngineStats,
    EngineStopped,
    GenerationRequest,
    RequestRejected,
    StreamEvent,
    Usage,
)

log = logging.getLogger("edgevlm.runtime")
IDLE_WAIT_S = 0.5  # the loop sleeps this long at most when idle (a wake-up event cuts it short)


class RequestStream(AsyncIterator[StreamEvent]):
    """One request's events, ending with the event that carries `finish_reason`. Closing it
    early (`aclose`, or leaving `async with`) cancels the request and frees its KV row."""

    def __init__(self, owner: AsyncEngine, request_id: str) -> None:
        self.request_id = request_id
        self._owner = owner
        self._queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._done = False
        self._last_read = -float("inf")  # loop time this stream last handed out an event

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        loop = asyncio.get_running_loop()
        wait = self._last_read + self._owner.stream_interval_s - loop.time()
        if event.finish_reason is None and wait > 0 and self._owner.num_streams > 1:
            # Under load a stream hands out at most one event per interval: with many streams, the
            # per-chunk work (JSON, SSE, the client's read) shares the CPU and the GIL with the
            # engine, and at one chunk per token it grows with every stream. Alone, every token
            # leaves at once; the first token and the last event are never held back.
            await asyncio.sleep(wait)
        # Events that queued meanwhile (or while the reader was busy) leave as one.
        while event.finish_reason is None and not self._queue.empty():
            event = event.then(self._queue.get_nowait())
        self._last_read = loop.time()
        if event.finish_reason is not None:
            self._done = True
        return event

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._owner.cancel(self.request_id)

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _put(self, event: StreamEvent) -> None:
        self._queue.put_nowait(event)


class AsyncEngine:
    def __init__(self, engine: Engine, stream_interval_s: float = 0.0) -> None:
        """`stream_interval_s`: while more than one stream is open, each hands out at most one
        (merged) event per this many seconds; 0 = every step's event as it comes."""
        if stream_interval_s < 0:
            raise ValueError(f"stream_interval_s must be >= 0, got {stream_interval_s}")
        self.engine = engine
        self.stream_interval_s = stream_interval_s
        self._lock = threading.Lock()
        self._inbox: list[tuple[str, Sequence | str]] = []
        self._reserved = 0  # accepted sequences still in the inbox
        self._streams: dict[str, RequestStream] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_bundle(
        cls, path: str | Path, backend: str = "onnxruntime", device: str = "cpu", stream_interval_s: float = 0.0,
        **limits
    ) -> AsyncEngine:
        return cls(Engine.from_bundle(path, backend=backend, device=device, **limits), stream_interval_s)

    @property
    def num_streams(self) -> int:
        """Open request streams (submitted, not yet finished)."""
        return len(self._streams)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run_loop, name="edgevlm-engine", daemon=True)
        self._thread.start()
        self._accepting = True

    async def stop(self, drain_timeout: float = 30.0) -> None:
        """Refuse new requests, let running ones finish for up to `drain_timeout` seconds, cancel
        the rest, then end the loop thread."""
        self._accepting = False
        if self._thread is None:
            return
        deadline = asyncio.get_running_loop().time() + drain_timeout
        while self._busy() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for request_id in list(self._streams):
            self.cancel(request_id)
        while self._busy():
            await asyncio.sleep(0.01)
        self._stopping.set()
        self._wake.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _busy(self) -> bool:
        with self._lock:
            return bool(self._inbox) or bool(self._streams)

    # -- requests ----------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> RequestStream:
        """Raises EngineStopped, RequestRejected (can never run) or EngineOverloaded (queue full)."""
        if not self._accepting:
            raise EngineStopped("the engine is not accepting requests (stopped or not started)")
        seq = self.engine.prepare(request)
        stream = RequestStream(self, request.request_id)
        with self._lock:
            if request.request_id in self._streams:
                raise RequestRejected(f"request_id {request.request_id!r} is already running")
            scheduler = self.engine.scheduler
            room = scheduler.config.max_queue + scheduler.table.num_free - scheduler.num_waiting
            if self._reserved >= room:
                raise EngineOverloaded("the engine's queue is full", retry_after=scheduler.retry_after())
            self._reserved += 1
            self._inbox.append(("add", seq))
            self._streams[request.request_id] = stream
        self._wake.set()
        return stream

    def cancel(self, request_id: str) -> None:
        """Cancel a request (thread-safe); its stream receives a final "cancelled" event."""
        with self._lock:
            self._inbox.append(("cancel", request_id))
        self._wake.set()

    def stats(self) -> EngineStats:
        return self.engine.stats()

    # -- the loop thread ---------------------------------------------------------------------
    def _run_loop(self) -> None:
        while not self._stopping.is_set():
            events = self._take_inbox()
            if self.engine.has_work:
                try:
                    events += self.engine.step()
                except Exception:  # Engine.step guards its batch; this is the last resort
                    log.exception("engine loop error")
                    events += self._fail_all()
            elif not events:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
            if events:
                self._deliver_threadsafe(events)

    def _take_inbox(self) -> list[Event]:
        events: list[Event] = []
        with self._lock:
            inbox, self._inbox = self._inbox, []
            for kind, item in inbox:
                if kind == "add":
                    self._reserved -= 1
                    events += self._add(item)  # type: ignore[arg-type]
                else:
                    event = self.engine.abort(item)  # type: ignore[arg-type]
                    if event is not None:
                        events.append(event)
        return events

    def _add(self, seq: Sequence) -> list[Event]:
        """Room was reserved at submit, so this cannot overflow; anything else fails this request only."""
        try:
            self.engine.add(seq)
        except Exception as exc:
            log.exception("could not queue %s", seq.request_id)
            usage = Usage(prompt_tokens=seq.num_prompt, completion_tokens=0)
            return [(seq, StreamEvent("", finish_reason="error", usage=usage, error=str(exc)))]
        return []

    def _fail_all(self) -> list[Event]:
        events = (self.engine.abort(rid, error="engine error") for rid in self.engine.live_request_ids())
        return [event for event in events if event is not None]

    def _deliver_threadsafe(self, events: list[Event]) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver, events)
        except RuntimeError:  # the event loop closed under us: nobody is listening any more
            with self._lock:
                for seq, event in events:
                    if event.finish_reason is not None:
                        self._streams.pop(seq.request_id, None)

    def _deliver(self, events: list[Event]) -> None:
        for seq, event in events:
            with self._lock:
                stream = self._streams.get(seq.request_id)
                if event.finish_reason is not None:
                    self._streams.pop(seq.request_id, None)
            if stream is not None:
                stream._put(event)
