"""Which sequences run next: FIFO admission by free KV rows, chunked prefill, interleaved decode.

The prefill/decode split happens here, once: every step is either a prefill batch (prompt chunks
of sequences in the prefill block) or a decode batch (one token for every decoding row).
Rules:
- waiting sequences are admitted in arrival order while a KV row is free; the waiting queue is
  bounded and a full queue raises EngineOverloaded with a retry estimate;
- a sequence that `hold` says should wait (a row now prefilling is computing its prompt's
  prefix) keeps its place and a free row while later ones are admitted into the other rows; it
  waits for that prefill, no longer;
- a prefill step takes contiguous prefill rows, oldest block position first, while the padded
  size (rows x longest chunk) fits `max_prefill_tokens`; a long prompt is split into chunks;
- while sequences are decoding, prefill and decode steps alternate, so a newcomer's prefill
  delays running decodes by at most one chunk per token.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edgevlm.runtime.kv_cache import RowMove, RowTable
from edgevlm.runtime.sequence import Sequence, Status
from edgevlm.runtime.types import EngineOverloaded


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_queue: int = 64
    max_prefill_tokens: int = 512

    def __post_init__(self) -> None:
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.max_prefill_tokens < 1:
            raise ValueError(f"max_prefill_tokens must be >= 1, got {self.max_prefill_tokens}")


@dataclass(frozen=True, slots=True)
class ScheduledBatch:
    """One step's work: rows `first_row .. first_row + len(seqs)` of the KV cache."""

    is_prefill: bool
    seqs: tuple[Sequence, ...]
    first_row: int
    num_new: tuple[int, ...]  # tokens each row feeds (1 per row in decode)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)


class Scheduler:
    def __init__(self, config: SchedulerConfig, table: RowTable,
                 on_admit: Callable[[Sequence], None] | None = None,
                 hold: Callable[[Sequence], bool] | None = None) -> None:
        self.config = config
        self.table = table
        self.on_admit = on_admit  # called once a sequence holds its row (prefix reuse)
        self.hold = hold  # True: not this step (the prefix it shares is being computed)
        self.waiting: deque[Sequence] = deque()
        self._last_was_prefill = False
        self._mean_duration = 5.0  # seconds per request, smoothed; seeds retry_after

    # -- queries ---------------------------------------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return self.table.num_used

    @property
    def has_work(self) -> bool:
        return bool(self.waiting) or self.table.num_used > 0

    def prefilling(self) -> list[Sequence]:
        """Sequences holding a row whose prompt is not fully cached yet, in row order."""
        return [self.table.owner(r) for r in range(self.table.num_decoding, self.table.num_used)]  # type: ignore[misc]

    def retry_after(self) -> float:
        """Seconds until a queue slot likely frees: queued rounds x mean request time, in [1, 60]."""
        rounds = (len(self.waiting) + 1) / max(1, self.table.capacity)
        return min(60.0, max(1.0, rounds * self._mean_duration))

    # -- changes ---------------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        # Free rows take waiting sequences at the next step, so they count as queue room too.
        if len(self.waiting) >= self.config.max_queue + self.table.num_free:
            raise EngineOverloaded(
                f"waiting queue is full ({self.config.max_queue} requests)", retry_after=self.retry_after()
            )
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def schedule(self) -> ScheduledBatch | None:
        self._admit()
        decoding = self.table.num_decoding
        prefilling = self.table.num_used - decoding
        if prefilling and (not decoding or not self._last_was_prefill):
            self._last_was_prefill = True
            return self._prefill_batch(decoding)
        self._last_was_prefill = False
        if decoding:
            seqs = tuple(self.table.owner(r) for r in range(decoding))
            return ScheduledBatch(False, seqs, 0, (1,) * decoding)  # type: ignore[arg-type]
        return None

    def prefill_done(self, seq: Sequence) -> list[RowMove]:
        """The sequence's whole prompt is cached: it joins the decode block."""
        seq.status = Status.DECODE
        return self.table.promote(seq)

    def release(self, seq: Sequence) -> list[RowMove]:
        """Drop a finished or cancelled sequence wherever it is; its KV row frees at once."""
        if seq in self.table:
            self._observe(seq)
            return self.table.release(seq)
        if seq in self.waiting:
            self.waiting.remove(seq)
        return []

    # -- internals -------------------------------------------------------------------------
    def _admit(self) -> None:
        held: list[Sequence] = []
        # Each held sequence keeps a free row for itself (later arrivals must not leave it waiting
        # for a whole request instead of one prefill); so the scan stops once the free rows are
        # taken or kept, never walking the whole queue.
        while self.waiting and self.table.num_free > len(held):
            seq = self.waiting.popleft()
            if self.hold is not None and self.hold(seq):
                held.append(seq)
                continue
            self.table.allocate(seq)
            seq.status = Status.PREFILL
            if self.on_admit is not None:
                self.on_admit(seq)
        self.waiting.extendleft(reversed(held))

    def _prefill_batch(self, first_row: int) -> ScheduledBatch:
        budget = self.config.max_prefill_tokens
        seqs: list[Sequence] = []
        chunks: list[int] = []
        width = 0  # the batch's padded chunk length
        for row in range(first_row, self.table.num_used):
            seq: Sequence = self.table.owner(row)  # type: ignore[assignment]
            if not seqs:
                width = min(seq.prefill_remaining, budget)
            elif (len(seqs) + 1) * width > budget:
                break
            seqs.append(seq)
            chunks.append(min(seq.prefill_remaining, width))
        return ScheduledBatch(True, tuple(seqs), first_row, tuple(chunks))

    def _observe(self, seq: Sequence) -> None:
        duration = time.monotonic() - seq.arrival
        self._mean_duration = 0.8 * self._mean_duration + 0.2 * duration
