"""Decode-step shape buckets for CUDA graphs (pure numpy).

A CUDA graph replays fixed shapes and addresses, but decode shapes move every step: the batch
with the running sequences, the key width (`past + 1`) with every token. So a decode step is
padded up to a bucket (batch b >= B, width t >= past + 1) and the graph captured for that bucket
is replayed. Padding is exact, not approximate:
- extra key columns are cache positions the bias hides (-inf), and the new token moves to the
  last column (t - 1), the position the graph appends it at (it reads `t - 1` cached positions);
- extra rows read cache rows the step does not own and see only themselves, so their softmax
  stays finite; their logits and K/V are dropped.
Hidden keys contribute exp(-inf) = 0, so real rows get the same logits up to summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Narrow key widths cost little to pad; fewer buckets mean fewer graphs and contexts.
MIN_TOTAL_BUCKET = 256


def ladder(limit: int, start: int = 1) -> tuple[int, ...]:
    """start, 2 start, 4 start ... below limit, then limit itself."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    steps, value = [], max(1, start)
    while value < limit:
        steps.append(value)
        value *= 2
    return (*steps, limit)


@dataclass(frozen=True, slots=True)
class DecodeBuckets:
    batch: tuple[int, ...]
    total: tuple[int, ...]

    @classmethod
    def for_cache(cls, rows: int, max_len: int, min_total: int = MIN_TOTAL_BUCKET) -> DecodeBuckets:
        return cls(ladder(rows), ladder(max_len, min(min_total, max_len)))

    def pick(self, batch: int, total: int) -> tuple[int, int] | None:
        """The smallest bucket holding (batch, total), None when none does."""
        b = next((x for x in self.batch if x >= batch), None)
        t = next((x for x in self.total if x >= total), None)
        return None if b is None or t is None else (b, t)

    def __len__(self) -> int:
        return len(self.batch) * len(self.total)


@dataclass(frozen=True, slots=True)
class PaddedDecode:
    inputs_embeds: np.ndarray  # [b, 1, hidden]
    position_ids: np.ndarray  # [3, b, 1] int64
    attention_bias: np.ndarray  # [b, 1, 1, t] float32
    logits_index: np.ndarray  # [b] int64


def pad_decode(inputs_embeds: np.ndarray, position_ids: np.ndarray, attention_bias: np.ndarray,
               batch: int, total: int) -> PaddedDecode:
    """A decode step's inputs padded to bucket (batch, total).
    # inputs_embeds [B, 1, H], position_ids [3, B, 1], attention_bias [B, 1, 1, past + 1]"""
    rows, seq, hidden = inputs_embeds.shape
    past = attention_bias.shape[3] - seq
    if seq != 1 or rows > batch or past + 1 > total:
        raise ValueError(
            f"decode step [{rows} rows, seq {seq}, width {past + 1}] does not fit bucket ({batch}, {total})"
        )
    embeds = np.zeros((batch, 1, hidden), inputs_embeds.dtype)
    embeds[:rows] = inputs_embeds
    positions = np.zeros((3, batch, 1), np.int64)
    positions[:, :rows] = position_ids
    bias = np.full((batch, 1, 1, total), -np.inf, np.float32)
    bias[:rows, :, :, :past] = attention_bias[:, :, :, :past]
    bias[:rows, :, :, total - 1] = attention_bias[:, :, :, past]
    bias[rows:, :, :, total - 1] = 0.0
    return PaddedDecode(embeds, positions, bias, np.zeros(batch, np.int64))
