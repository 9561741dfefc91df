"""Device memory arithmetic for the TensorRT backend (pure Python, no CUDA).

The KV cache is the one large allocation the runtime chooses: engines, execution contexts and the
per-step buffers are allocated first, then the cache takes what is left of the free memory minus a
reserve, and never more rows than the engines or the engine limits allow. On Jetson the GPU shares
system memory with the CPU, so "free" is the system's free memory and the reserve matters more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgevlm.runtime.kv_cache import MB, KVLayout

# Left free after the cache: the CUDA graphs' pools, allocator slack, the host side on Jetson.
MIN_RESERVE_BYTES = 512 * MB
RESERVE_FRACTION = 0.05


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    total_bytes: int  # device memory (Jetson: system memory)
    free_bytes: int  # free now, after engines, contexts and step buffers
    reserve_bytes: int | None = None  # None: max(MIN_RESERVE_BYTES, RESERVE_FRACTION x total)

    def __post_init__(self) -> None:
        if self.total_bytes < 1:
            raise ValueError(f"total_bytes must be >= 1, got {self.total_bytes}")
        if not 0 <= self.free_bytes <= self.total_bytes:
            raise ValueError(f"free_bytes must be in [0, total_bytes], got {self.free_bytes}")
        if self.reserve_bytes is not None and self.reserve_bytes < 0:
            raise ValueError(f"reserve_bytes must be >= 0, got {self.reserve_bytes}")

    @property
    def reserve(self) -> int:
        if self.reserve_bytes is not None:
            return self.reserve_bytes
        return max(MIN_RESERVE_BYTES, int(RESERVE_FRACTION * self.total_bytes))

    @property
    def usable_bytes(self) -> int:
        return max(0, self.free_bytes - self.reserve)


def row_bytes(layout: KVLayout) -> int:
    """One sequence's cache row: max_len tokens of K and V in every layer."""
    return layout.max_len * layout.bytes_per_token


def device_kv_layout(layout: KVLayout, budget: MemoryBudget, engine_max_batch: int) -> KVLayout:
    """The engine's requested layout with its rows lowered to what the engines accept and the
    device holds (plus the scratch row every cache keeps). ValueError when not even one row fits."""
    per_row = row_bytes(layout)
    fit = budget.usable_bytes // per_row - 1
    if fit < 1:
        need = 2 * per_row + budget.reserve
        raise ValueError(
            f"GPU memory: one sequence of {layout.max_len} tokens needs {need / MB:.0f} MB "
            f"(2 KV rows incl. scratch + {budget.reserve / MB:.0f} MB reserve), "
            f"{budget.free_bytes / MB:.0f} MB free"
        )
    rows = min(layout.rows, engine_max_batch, fit)
    return KVLayout(layout.num_layers, rows, layout.kv_heads, layout.max_len, layout.head_dim, layout.dtype)


@dataclass(frozen=True, slots=True)
class StepBuffers:
    """Bytes of the decoder's reused device buffers for steps of up to `tokens` new tokens
    (rows x chunk) over `rows` rows with up to `max_len` visible keys."""

    inputs_embeds: int
    position_ids: int
    attention_bias: int
    logits_index: int
    logits: int
    presents: int

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name in self.__dataclass_fields__)


def step_buffers(*, tokens: int, rows: int, max_len: int, hidden: int, vocab: int, num_layers: int,
                 kv_heads: int, head_dim: int, itemsize: int) -> StepBuffers:
    """# tokens: max batch x seq of one call (>= rows, decode is one token per row)"""
    tokens = max(tokens, rows)
    return StepBuffers(
        inputs_embeds=tokens * hidden * itemsize,
        position_ids=3 * tokens * 8,
        attention_bias=tokens * max_len * 4,
        logits_index=rows * 8,
        logits=rows * vocab * 4,
        presents=num_layers * 2 * tokens * kv_heads * head_dim * itemsize,
    )


def decode_tokens_per_s_ceiling(bandwidth_bytes_per_s: float, weight_bytes: int, kv_bytes_read: int,
                                batch: int) -> float:
    """Memory-bandwidth bound of decode: each step reads every weight once and each row's cached
    K/V, and yields one token per row. # -> tokens/s summed over the batch"""
    if bandwidth_bytes_per_s <= 0 or batch < 1:
        raise ValueError("bandwidth_bytes_per_s must be > 0 and batch >= 1")
    step_seconds = (weight_bytes + kv_bytes_read) / bandwidth_bytes_per_s
    return math.inf if step_seconds == 0 else batch / step_seconds
