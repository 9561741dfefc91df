"""The device KV cache on torch's CPU device: the same bytes as the host KVCache after any mix of
decode scatters, prefill writes and row moves."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.runtime.kv_cache import KVCache, KVLayout, RowMove

torch = pytest.importorskip("torch")

from edgevlm.runtime.backends.trt_kv_cache import DeviceKVCache  # noqa: E402

LAYOUT = KVLayout(num_layers=3, rows=5, kv_heads=2, max_len=24, head_dim=4, dtype=np.dtype(np.float16))


def same(host: KVCache, device: DeviceKVCache) -> bool:
    return all(
        np.array_equal(h[i], d[i].numpy())
        for h, d in ((host.keys, device.keys), (host.values, device.values))
        for i in range(LAYOUT.num_layers)
    )


def presents(batch: int, seq: int, seed: int) -> np.ndarray:
    """# -> [layers, 2, batch, kv_heads, seq, head_dim]"""
    shape = (LAYOUT.num_layers, 2, batch, LAYOUT.kv_heads, seq, LAYOUT.head_dim)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float16)


def write_both(host: KVCache, device: DeviceKVCache, first: int, starts: list[int], counts: list[int],
               new: np.ndarray) -> None:
    s, c = np.array(starts), np.array(counts)
    for layer in range(LAYOUT.num_layers):
        host.write(layer, first, s, c, new[layer, 0], new[layer, 1])
    device.write_all(first, s, c, torch.from_numpy(new))


def test_starts_zeroed_with_a_scratch_row() -> None:
    cache = DeviceKVCache(LAYOUT, torch.float16, "cpu")
    assert tuple(cache.storage.shape) == (3, 2, 6, 2, 24, 4)
    assert not cache.storage.any()
    assert cache.table.capacity == 5


def test_decode_scatter_prefill_writes_and_moves_match_the_host_cache() -> None:
    host, device = KVCache(LAYOUT), DeviceKVCache(LAYOUT, torch.float16, "cpu")
    write_both(host, device, 1, [0, 3, 9], [5, 2, 4], presents(3, 5, 0))  # prefill chunk, padded rows
    write_both(host, device, 0, [7, 2, 11, 0], [1, 1, 1, 1], presents(4, 1, 1))  # decode: one scatter
    assert same(host, device)
    moves = [RowMove(2, 5, 12), RowMove(0, 2, 8), RowMove(5, 0, 12), RowMove(4, 1, 0)]
    host.apply(moves)
    device.apply(moves)
    assert same(host, device)


def test_decode_scatter_with_a_prepared_index() -> None:
    host, device = KVCache(LAYOUT), DeviceKVCache(LAYOUT, torch.float16, "cpu")
    new = presents(2, 1, 3)
    for layer in range(LAYOUT.num_layers):
        host.write(layer, 0, np.array([4, 6]), np.array([1, 1]), new[layer, 0], new[layer, 1])
    index = (torch.tensor([0, 1]), torch.tensor([4, 6]))
    device.write_all(0, np.array([4, 6]), np.array([1, 1]), torch.from_numpy(new), index)
    assert same(host, device)


def test_rows_view_and_addresses_point_into_the_storage() -> None:
    cache = DeviceKVCache(LAYOUT, torch.float16, "cpu")
    keys, values = cache.rows_view(2, 1, 3)
    assert tuple(keys.shape) == (3, 2, 24, 4)
    assert keys.is_contiguous() and values.is_contiguous()
    row_bytes = 2 * 24 * 4 * 2
    base = cache.storage.data_ptr()
    # storage[layer, kind, row]: layer stride = 2 kinds x 6 rows.
    assert cache.row_block_address(2, 1, 1) == base + ((2 * 2 + 1) * 6 + 1) * row_bytes
    assert keys.data_ptr() == cache.row_block_address(2, 0, 1)
    assert values.data_ptr() == cache.row_block_address(2, 1, 1)
