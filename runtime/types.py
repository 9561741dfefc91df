"""Typed boundary between the server and the runtime: requests in, stream events out.

The server validates HTTP input and builds these; the runtime never sees JSON. Nothing here
imports torch or onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """A decoded RGB image (EXIF orientation already applied by the caller)."""

    image: Image.Image


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[TextPart | ImagePart, ...]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request decoding settings. temperature 0 means greedy; top_k 0 means off."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: bool = False
    top_logprobs: int = 0
    # EOS tokens cannot be produced before this many tokens were generated (vLLM's min_tokens).
    min_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in [0, 20], got {self.top_logprobs}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    messages: tuple[Message, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One step of a request's output: new text (possibly empty), and on the last event the
    finish reason and usage. `error` is set when finish_reason == "error"."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: str | None = None
    steps: int = 1  # engine steps this event covers: more than 1 when a slow reader's backlog was joined

    def then(self, later: StreamEvent) -> StreamEvent:
        """This event and the one after it as one: texts and logprobs joined, the ending (finish
        reason, usage, error) the later one's. Only an event without a finish reason has a next."""
        assert self.finish_reason is None, "nothing follows a finished stream's last event"
        return StreamEvent(self.text + later.text, self.logprobs + later.logprobs, later.finish_reason,
                           later.usage, later.error, self.steps + later.steps)


class EngineOverloaded(Exception):
    """The waiting queue is full; retry after `retry_after` seconds (server: 429 + Retry-After)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineStopped(RuntimeError):
    """The engine is shutting down (or not started) and takes no new requests (server: 503)."""


class RequestRejected(ValueError):
    """The request can never run (prompt longer than the context, too many images...): a 400."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Point-in-time figures for /metrics and /ready."""

    num_running: int
    num_waiting: int
    kv_tokens_total: int
    kv_tokens_used: int
    image_cache_hits: int
    image_cache_misses: int
    num_cancelled: int
    prefix_cache_hits: int = 0  # admitted prompts that started after a reused prefix
    prefix_cache_tokens: int = 0  # prompt tokens whose prefill those reuses skipped

    @property
    def kv_usage(self) -> float:
        return self.kv_tokens_used / self.kv_tokens_total if self.kv_tokens_total else 0.0
