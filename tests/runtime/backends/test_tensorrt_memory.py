"""Device memory arithmetic of the TensorRT backend: KV rows from a memory budget, step buffers,
the bandwidth bound of decode."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.runtime.backends.trt_memory import (
    MIN_RESERVE_BYTES,
    MemoryBudget,
    decode_tokens_per_s_ceiling,
    device_kv_layout,
    row_bytes,
    step_buffers,
)
from edgevlm.runtime.kv_cache import MB, KVLayout

GB = 1 << 30
# GLM-4.6V-Flash: 40 layers x (K, V) x 2 KV heads x 128 x 2 bytes = 40 KiB per token at fp16.
GLM_KV = KVLayout(num_layers=40, rows=16, kv_heads=2, max_len=8192, head_dim=128, dtype=np.dtype(np.float16))


def test_glm_flash_kv_is_40_kib_per_token() -> None:
    assert GLM_KV.bytes_per_token == 40 * 1024
    assert row_bytes(GLM_KV) == 8192 * 40 * 1024  # 320 MiB per sequence of 8192 tokens


def test_reserve_defaults_to_the_larger_of_floor_and_fraction() -> None:
    assert MemoryBudget(8 * GB, 4 * GB).reserve == MIN_RESERVE_BYTES
    assert MemoryBudget(80 * GB, 40 * GB).reserve == 4 * GB
    assert MemoryBudget(80 * GB, 40 * GB, reserve_bytes=0).usable_bytes == 40 * GB


def test_rows_are_what_the_free_memory_holds_minus_the_scratch_row() -> None:
    # 3 GiB usable / 320 MiB per row = 9 rows, one of them the scratch row.
    budget = MemoryBudget(8 * GB, 3 * GB + MIN_RESERVE_BYTES)
    sized = device_kv_layout(GLM_KV, budget, engine_max_batch=16)
    assert sized.rows == 8
    assert (sized.max_len, sized.num_layers, sized.dtype) == (8192, 40, np.dtype(np.float16))
    assert sized.nbytes <= budget.usable_bytes


def test_rows_never_exceed_the_request_or_the_engines() -> None:
    plenty = MemoryBudget(80 * GB, 70 * GB)
    assert device_kv_layout(GLM_KV, plenty, engine_max_batch=16).rows == 16
    assert device_kv_layout(GLM_KV, plenty, engine_max_batch=4).rows == 4


def test_too_little_memory_for_one_sequence_is_a_clear_error() -> None:
    budget = MemoryBudget(8 * GB, MIN_RESERVE_BYTES + 500 * MB)
    with pytest.raises(ValueError) as raised:
        device_kv_layout(GLM_KV, budget, engine_max_batch=16)
    assert str(raised.value) == (
        "GPU memory: one sequence of 8192 tokens needs 1152 MB (2 KV rows incl. scratch + 512 MB reserve), "
        "1012 MB free"
    )


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("total_bytes", {"total_bytes": 0, "free_bytes": 0}), ("free_bytes", {"total_bytes": 1, "free_bytes": 2}),
     ("reserve_bytes", {"total_bytes": 2, "free_bytes": 1, "reserve_bytes": -1})],
)
def test_budget_validation_names_the_field(field: str, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=field):
        MemoryBudget(**kwargs)


def test_step_buffers() -> None:
    sizes = step_buffers(tokens=512, rows=16, max_len=8192, hidden=4096, vocab=151552, num_layers=40,
                         kv_heads=2, head_dim=128, itemsize=2)
    assert sizes.attention_bias == 512 * 8192 * 4
    assert sizes.logits == 16 * 151552 * 4
    assert sizes.presents == 40 * 2 * 512 * 2 * 128 * 2
    assert sizes.total < 64 * MB
    # Decode steps have one token per row: the buffers hold at least `rows` tokens.
    assert step_buffers(tokens=4, rows=16, max_len=64, hidden=8, vocab=8, num_layers=1, kv_heads=1,
                        head_dim=8, itemsize=2).inputs_embeds == 16 * 8 * 2


def test_decode_ceiling_is_bandwidth_over_bytes_read() -> None:
    # 18.8 GB of fp16 weights at 204.8 GB/s (Jetson AGX Orin) -> about 10.9 tokens/s per sequence.
    assert decode_tokens_per_s_ceiling(204.8e9, int(18.8e9), 0, 1) == pytest.approx(10.89, abs=0.01)
    # A batch shares the weight reads; its KV reads add up.
    assert decode_tokens_per_s_ceiling(1e9, int(1e9), int(1e9), 8) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="bandwidth_bytes_per_s"):
        decode_tokens_per_s_ceiling(0, 1, 0, 1)
