"""One request's generation: consumes the engine stream, times it, records metrics, and always
closes the stream (a closed stream cancels the generation and frees its KV cache)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import anyio

from edgevlm.runtime.types import StreamEvent, TokenLogprob
from edgevlm.server.engine import EngineStream
from edgevlm.server.metrics import Metrics, RequestTimer
from edgevlm.server.schemas import ChoiceLogprobs, TokenLogprobOut, TopLogprob


@dataclass
class Generation:
    request_id: str
    stream: EngineStream
    metrics: Metrics
    timer: RequestTimer = field(default_factory=RequestTimer)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    _closed: bool = field(default=False, repr=False)

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        """The engine's events up to and including the one with a finish reason."""
        self.timer.on_submitted()
        try:
            async for event in self.stream:
                self.timer.on_event(bool(event.text), self.metrics, event.steps)
                if event.usage is not None:
                    self.prompt_tokens = event.usage.prompt_tokens
                    self.completion_tokens = event.usage.completion_tokens
                if event.finish_reason is not None:
                    self.finish_reason, self.error = event.finish_reason, event.error
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        """Idempotent; called however the request ends, even if its events were never read."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self.stream.aclose()
        self._record()

    @property
    def cancelled(self) -> bool:
        return self.finish_reason in (None, "cancelled")

    def _record(self) -> None:
        m = self.metrics
        if self.cancelled:
            m.requests_cancelled.inc()
            return
        if self.finish_reason == "error":
            m.requests_failed.labels(code="engine_error").inc()
            return
        m.request_success.labels(finished_reason=self.finish_reason).inc()
        m.prompt_tokens.inc(self.prompt_tokens)
        m.generation_tokens.inc(self.completion_tokens)
        m.e2e.observe(self.timer.elapsed())

    def log_fields(self) -> str:
        ttft = "-" if self.timer.ttft is None else f"{self.timer.ttft * 1000:.0f}ms"
        return (
            f"id={self.request_id} finish={self.finish_reason or 'client_gone'} "
            f"prompt_tokens={self.prompt_tokens} completion_tokens={self.completion_tokens} ttft={ttft}"
        )


def logprobs_out(items: tuple[TokenLogprob, ...]) -> list[TokenLogprobOut]:
    return [
        TokenLogprobOut(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.token.encode()),
            top_logprobs=[TopLogprob(token=s, logprob=lp, bytes=list(s.encode())) for s, lp in t.top],
        )
        for t in items
    ]


def choice_logprobs(items: list[TokenLogprobOut] | None) -> ChoiceLogprobs | None:
    return None if items is None else ChoiceLogprobs(content=items)
