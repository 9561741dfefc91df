"""RowTable bookkeeping and the host KV arrays: contiguous blocks, moves that carry the data."""

from __future__ import annotations

import random

import numpy as np
import pytest

from edgevlm.runtime.kv_cache import KVCache, KVLayout, RowTable


def layout(rows: int = 4, max_len: int = 8) -> KVLayout:
    return KVLayout(num_layers=2, rows=rows, kv_heads=1, max_len=max_len, head_dim=2, dtype=np.dtype(np.float32))


def fill(cache: KVCache, seq: str, start: int, count: int) -> None:
    """Write tokens whose values encode (sequence, position), like the backend would."""
    row = cache.table.row(seq)
    code = float(ord(seq[0]))
    new = np.array([code * 100 + start + i for i in range(count)], np.float32)
    new = np.broadcast_to(new[None, None, :, None], (1, 1, count, 2)).copy()
    cache.write_all(row, np.array([start]), np.array([count]), [(new, -new)] * cache.layout.num_layers)
    cache.table.advance(seq, count)


def check(cache: KVCache) -> None:
    """Every live row holds exactly its sequence's tokens, in order."""
    table = cache.table
    for row in range(table.num_used):
        seq = table.owner(row)
        length = table.length(seq)
        expected = np.array([ord(seq[0]) * 100 + i for i in range(length)], np.float32)
        for layer in range(cache.layout.num_layers):
            np.testing.assert_array_equal(cache.keys[layer][row, 0, :length, 0], expected)
            np.testing.assert_array_equal(cache.values[layer][row, 0, :length, 1], -expected)


def test_sized_by_budget() -> None:
    common = dict(num_layers=2, kv_heads=2, head_dim=4, dtype=np.dtype(np.float32), max_batch=16, max_len=64)
    per_row = 2 * 2 * 2 * 4 * 4 * 64
    assert KVLayout.sized(**common).rows == 16
    assert KVLayout.sized(**common, kv_cache_mb=(5 * per_row) / (1 << 20)).rows == 4  # one row is scratch
    assert KVLayout.sized(**common, max_kv_tokens=64 * 3).rows == 3
    with pytest.raises(ValueError, match="kv_cache_mb"):
        KVLayout.sized(**common, kv_cache_mb=per_row / (1 << 20))
    with pytest.raises(ValueError, match="max_kv_tokens"):
        KVLayout.sized(**common, max_kv_tokens=10)
    with pytest.raises(ValueError, match="rows"):
        KVLayout(2, 0, 1, 8, 2, np.dtype(np.float32))


def test_release_keeps_blocks_contiguous() -> None:
    table = RowTable(4)
    for name in "abcd":
        table.allocate(name)
    table.advance("a", 3)
    table.promote("a")
    table.promote("b")
    assert table.num_decoding == 2
    moves = table.release("a")  # decode hole <- last decoding row b, then that hole <- last row d
    assert [(m.src, m.dst) for m in moves] == [(1, 0), (3, 1)]
    assert [table.owner(r) for r in range(table.num_used)] == ["b", "d", "c"]
    assert table.num_decoding == 1
    assert table.num_free == 1


def test_promote_swaps_through_scratch() -> None:
    table = RowTable(3)
    for name in "abc":
        table.allocate(name)
    table.advance("a", 2)
    table.advance("c", 5)
    moves = table.promote("c")
    assert [(m.src, m.dst, m.length) for m in moves] == [(2, 3, 5), (0, 2, 2), (3, 0, 5)]
    assert table.owner(0) == "c" and table.owner(2) == "a"


def test_free_frees_at_once() -> None:
    cache = KVCache(layout())
    cache.table.allocate("x")
    fill(cache, "x", 0, 5)
    assert cache.table.tokens_used == 5
    cache.apply(cache.table.release("x"))
    assert cache.table.tokens_used == 0 and cache.table.num_free == 4


def test_random_operations_keep_data_with_its_sequence() -> None:
    rng = random.Random(0)
    cache = KVCache(layout(rows=5, max_len=40))
    table = cache.table
    names = iter(chr(c) for c in range(ord("A"), ord("z")))
    prefilling: list[str] = []
    decoding: list[str] = []
    for _ in range(300):
        action = rng.random()
        if action < 0.3 and table.num_free:
            name = next(names, None) or "~"
            if name in table:
                continue
            table.allocate(name)
            prefilling.append(name)
        elif action < 0.5 and prefilling:
            name = rng.choice(prefilling)
            cache.apply(table.promote(name))
            prefilling.remove(name)
            decoding.append(name)
        elif action < 0.8 and (prefilling or decoding):
            name = rng.choice(prefilling + decoding)
            if table.length(name) < 35:
                fill(cache, name, table.length(name), rng.randint(1, 4))
        elif prefilling or decoding:
            name = rng.choice(prefilling + decoding)
            cache.apply(table.release(name))
            (prefilling if name in prefilling else decoding).remove(name)
        assert table.num_decoding == len(decoding)
        assert {table.owner(r) for r in range(table.num_decoding)} == set(decoding)
        assert {table.owner(r) for r in range(table.num_decoding, table.num_used)} == set(prefilling)
        check(cache)


def test_rows_view_is_a_view() -> None:
    cache = KVCache(layout())
    keys, values = cache.rows_view(1, 1, 2)
    assert np.shares_memory(keys, cache.keys[1]) and keys.flags.c_contiguous
    assert keys.shape == (2, 1, 8, 2)


@pytest.mark.parametrize("starts", [[0, 3, 5], [4, 4, 4]])
def test_decode_writes_land_at_each_rows_length(starts: list[int]) -> None:
    cache = KVCache(layout())
    new = np.arange(3 * 2, dtype=np.float32).reshape(3, 1, 1, 2)
    cache.write_all(1, np.array(starts), np.ones(3, np.int64), [(new, new + 1), (new + 2, new + 3)])
    for b in range(3):
        for layer in range(2):
            np.testing.assert_array_equal(cache.keys[layer][1 + b, 0, starts[b]], new[b, 0, 0] + 2 * layer)
            np.testing.assert_array_equal(cache.values[layer][1 + b, 0, starts[b]], new[b, 0, 0] + 2 * layer + 1)
        assert not cache.keys[0][1 + b, 0, starts[b] + 1].any()


def test_per_layer_write_matches_write_all() -> None:
    a, b = KVCache(layout()), KVCache(layout())
    starts, counts = np.array([1, 0]), np.array([3, 2])
    new = np.random.default_rng(0).normal(size=(2, 1, 3, 2)).astype(np.float32)
    a.write_all(0, starts, counts, [(new, -new), (2 * new, -2 * new)])
    b.write(0, 0, starts, counts, new, -new)
    b.write(1, 0, starts, counts, 2 * new, -2 * new)
    for layer in range(2):
        np.testing.assert_array_equal(a.keys[layer], b.keys[layer])
        np.testing.assert_array_equal(a.values[layer], b.values[layer])
