"""One request's life inside the engine: its prompt, progress through the KV cache, and output."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import numpy as np

from edgevlm.runtime.detokenizer import Detokenizer
from edgevlm.runtime.preprocess import Prompt
from edgevlm.runtime.sampling import SamplingState
from edgevlm.runtime.types import FinishReason, SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"  # queued, no KV row yet
    PREFILL = "prefill"  # holds a row, prompt partly cached
    DECODE = "decode"  # prompt cached, one token per step
    FINISHED = "finished"


@dataclass(eq=False, slots=True)
class Sequence:
    """Hashes by identity: the KV row table and the scheduler key on the object itself."""

    request_id: str
    prompt: Prompt
    params: SamplingParams
    sampling: SamplingState
    detokenizer: Detokenizer
    max_tokens: int  # params.max_tokens, lowered to what the context leaves
    eos_token_ids: frozenset[int]
    arrival: float = field(default_factory=time.monotonic)
    status: Status = Status.WAITING
    num_cached: int = 0  # tokens whose K/V are in the cache
    output_ids: list[int] = field(default_factory=list)
    image_embeds: np.ndarray | None = None  # [image tokens, hidden], set before the first chunk
    finish_reason: FinishReason | None = None
    error: str | None = None
    first_token_time: float | None = None
    prefix_reused: int = 0  # prompt tokens whose K/V came from the prefix cache
    prefix_key: np.ndarray | None = None  # the prompt's prefix-cache key, made once at admission

    @property
    def num_prompt(self) -> int:
        return len(self.prompt)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt + len(self.output_ids)

    @property
    def prefill_remaining(self) -> int:
        return self.num_prompt - self.num_cached

    @property
    def needs_images(self) -> bool:
        """Image embeddings are needed while some image token's K/V is not cached yet (a reused
        prefix may already hold every one)."""
        index = self.prompt.image_token_index
        return (self.status is Status.PREFILL and self.image_embeds is None and len(index) > 0
                and int(index[-1]) >= self.num_cached)

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED

    def suppressed_tokens(self) -> tuple[int, ...]:
        """EOS may not end the answer before min_tokens."""
        return tuple(self.eos_token_ids) if len(self.output_ids) < self.params.min_tokens else ()

    def finish(self, reason: FinishReason, error: str | None = None) -> None:
        self.status = Status.FINISHED
        self.finish_reason = reason
        self.error = error
