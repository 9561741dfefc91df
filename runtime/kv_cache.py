"""The preallocated KV cache: one `[rows + 1, kv_heads, max_len, head_dim]` array per layer and K/V.

Rows are handed to sequences. Decoding sequences occupy rows `[0, num_decoding)`, sequences still
prefilling the rows right after them, so every step's rows are one contiguous block that the
backend binds in place (a numpy view, no copy). Keeping the blocks contiguous costs one sequence's
KV copy when a row is freed (the last row moves into the hole) or promoted from prefill to decode
(a swap through the spare scratch row at index `rows`). `RowTable` is that bookkeeping alone.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

MB = 1 << 20


@dataclass(frozen=True, slots=True)
class KVLayout:
    num_layers: int
    rows: int
    kv_heads: int
    max_len: int
    head_dim: int
    dtype: np.dtype

    def __post_init__(self) -> None:
        for name in ("num_layers", "rows", "kv_heads", "max_len", "head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * 2 * self.kv_heads * self.head_dim * np.dtype(self.dtype).itemsize

    @property
    def total_tokens(self) -> int:
        return self.rows * self.max_len

    @property
    def nbytes(self) -> int:
        return (self.rows + 1) * self.max_len * self.bytes_per_token

    @classmethod
    def sized(
        cls,
        *,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: np.dtype,
        max_batch: int,
        max_len: int,
        kv_cache_mb: float | None = None,
        max_kv_tokens: int | None = None,
    ) -> KVLayout:
        """Rows = max_batch, lowered to what `kv_cache_mb` or `max_kv_tokens` allows (a row holds
        max_len tokens). Too small a budget for one row is a ValueError naming the field."""
        per_row = num_layers * 2 * kv_heads * head_dim * np.dtype(dtype).itemsize * max_len
        rows = max_batch
        if kv_cache_mb is not None:
            # The scratch row counts against the budget too.
            rows = min(rows, int(kv_cache_mb * MB // per_row) - 1)
            if rows < 1:
                raise ValueError(
                    f"kv_cache_mb={kv_cache_mb} holds no sequence of max_len {max_len} "
                    f"(needs {2 * per_row / MB:.1f} MB for one row plus scratch)"
                )
        if max_kv_tokens is not None:
            rows = min(rows, max_kv_tokens // max_len)
            if rows < 1:
                raise ValueError(f"max_kv_tokens={max_kv_tokens} is below max_len {max_len}")
        return cls(num_layers, rows, kv_heads, max_len, head_dim, np.dtype(dtype))


@dataclass(frozen=True, slots=True)
class RowMove:
    """Copy the first `length` cached tokens of row `src` into row `dst`."""

    src: int
    dst: int
    length: int


class RowTable:
    """Which sequence owns which row and how many tokens each row caches. Pure bookkeeping: every
    change that relocates data returns the RowMoves the storage must apply, in order."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.scratch = capacity
        self._ids: list[Hashable] = []
        self._lengths: list[int] = []
        self._rows: dict[Hashable, int] = {}
        self.num_decoding = 0

    # -- queries ---------------------------------------------------------------------------
    @property
    def num_used(self) -> int:
        return len(self._ids)

    @property
    def num_free(self) -> int:
        return self.capacity - len(self._ids)

    @property
    def tokens_used(self) -> int:
        return sum(self._lengths)

    def row(self, seq_id: Hashable) -> int:
        return self._rows[seq_id]

    def length(self, seq_id: Hashable) -> int:
        return self._lengths[self._rows[seq_id]]

    def owner(self, row: int) -> Hashable:
        return self._ids[row]

    def __contains__(self, seq_id: Hashable) -> bool:
        return seq_id in self._rows

    # -- changes ---------------------------------------------------------------------------
    def allocate(self, seq_id: Hashable) -> int:
        """A fresh row at the end of the prefill block."""
        if self.num_free == 0:
            raise RuntimeError("no free KV row (the scheduler admits only when num_free > 0)")
        if seq_id in self._rows:
            raise KeyError(f"{seq_id!r} already holds a row")
        row = len(self._ids)
        self._ids.append(seq_id)
        self._lengths.append(0)
        self._rows[seq_id] = row
        return row

    def advance(self, seq_id: Hashable, count: int) -> None:
        """`count` more tokens of this sequence were written to its row."""
        self._lengths[self._rows[seq_id]] += count

    def promote(self, seq_id: Hashable) -> list[RowMove]:
        """Prefill finished: move the sequence to the end of the decode block."""
        row = self._rows[seq_id]
        assert row >= self.num_decoding, "promoting a sequence that is already decoding"
        moves = self._swap(row, self.num_decoding)
        self.num_decoding += 1
        return moves

    def release(self, seq_id: Hashable) -> list[RowMove]:
        """Free the row now; the hole is filled from the end of its block (and the decode block's
        new hole from the end of the prefill block) so both blocks stay contiguous."""
        hole = self._rows.pop(seq_id)
        moves: list[RowMove] = []
        if hole < self.num_decoding:
            last_decoding = self.num_decoding - 1
            moves += self._move(last_decoding, hole)
            hole = last_decoding
            self.num_decoding -= 1
        moves += self._move(len(self._ids) - 1, hole)
        self._ids.pop()
        self._lengths.pop()
        return moves

    def _move(self, src: int, dst: int) -> list[RowMove]:
        if src == dst:
            return []
        seq_id, length = self._ids[src], self._lengths[src]
        self._ids[dst], self._lengths[dst] = seq_id, length
        self._rows[seq_id] = dst
        return [RowMove(src, dst, length)]

    def _swap(self, a: int, b: int) -> list[RowMove]:
        if a == b:
            return []
        id_a, len_a, id_b, len_b = self._ids[a], self._lengths[a], self._ids[b], self._lengths[b]
        self._ids[a], self._lengths[a], self._rows[id_b] = id_b, len_b, a
        self._ids[b], self._lengths[b], self._rows[id_a] = id_a, len_a, b
        return [RowMove(a, self.scratch, len_a), RowMove(b, a, len_b), RowMove(self.scratch, b, len_a)]


class KVCache:
    """The host arrays plus their RowTable. Writes and moves touch only the tokens concerned."""

    # Prompt-prefix reuse copies rows out to host memory and back (runtime/prefix_cache.py).
    supports_prefix_reuse = True

    def __init__(self, layout: KVLayout) -> None:
        self.layout = layout
        self.table = RowTable(layout.rows)
        shape = (layout.rows + 1, layout.kv_heads, layout.max_len, layout.head_dim)
        # Committed now, not as rows are first written (np.zeros maps pages lazily): a budget the
        # machine can't hold fails at load rather than mid-serving, and first-touch page faults
        # (milliseconds per MB in a VM) stay out of request latency.
        self.keys = [np.full(shape, 0, layout.dtype) for _ in range(layout.num_layers)]
        self.values = [np.full(shape, 0, layout.dtype) for _ in range(layout.num_layers)]

    def apply(self, moves: list[RowMove]) -> None:
        for move in moves:
            if move.length == 0:
                continue
            for array in (*self.keys, *self.values):
                array[move.dst, :, : move.length] = array[move.src, :, : move.length]

    def write(self, layer: int, first_row: int, starts: np.ndarray, counts: np.ndarray,
              new_keys: np.ndarray, new_values: np.ndarray) -> None:
        """Store one layer's new K/V at each row's own length.
        # new_keys, new_values: [batch, kv_heads, seq, head_dim]; starts, counts: [batch]"""
        where = _decode_where(first_row, starts, counts, new_keys.shape[2])
        self._write_layer(layer, where, first_row, starts, counts, new_keys, new_values)

    def write_all(self, first_row: int, starts: np.ndarray, counts: np.ndarray,
                  new: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Store a step's new K/V of every layer (new[layer] = (keys, values)) at each row's length."""
        where = _decode_where(first_row, starts, counts, new[0][0].shape[2])
        for layer, (keys, values) in enumerate(new):
            self._write_layer(layer, where, first_row, starts, counts, keys, values)

    def _write_layer(self, layer: int, where: tuple | None, first_row: int, starts: np.ndarray,
                     counts: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray) -> None:
        if where is not None:  # decode: one token per row, one store per array
            self.keys[layer][where] = new_keys[:, :, 0]
            self.values[layer][where] = new_values[:, :, 0]
            return
        for b in range(len(starts)):
            start, count = int(starts[b]), int(counts[b])
            self.keys[layer][first_row + b, :, start : start + count] = new_keys[b, :, :count]
            self.values[layer][first_row + b, :, start : start + count] = new_values[b, :, :count]

    def read_prefix(self, row: int, length: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """Copies of one row's first `length` tokens. # -> 2 x layers x [kv_heads, length, head_dim]"""
        return (tuple(k[row, :, :length].copy() for k in self.keys),
                tuple(v[row, :, :length].copy() for v in self.values))

    def write_prefix(self, row: int, keys: tuple[np.ndarray, ...], values: tuple[np.ndarray, ...],
                     length: int) -> None:
        """Store the first `length` tokens of stored K/V at the start of `row`."""
        for layer in range(len(self.keys)):
            self.keys[layer][row, :, :length] = keys[layer][:, :length]
            self.values[layer][row, :, :length] = values[layer][:, :length]

    def copy_prefix(self, source: int, target: int, length: int) -> None:
        """Copy row `source`'s first `length` tokens to the start of row `target`."""
        for layer in range(len(self.keys)):
            self.keys[layer][target, :, :length] = self.keys[layer][source, :, :length]
            self.values[layer][target, :, :length] = self.values[layer][source, :, :length]

    def rows_view(self, layer: int, first_row: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The contiguous block of rows a step binds. # -> 2 x [count, kv_heads, max_len, head_dim]"""
        rows = slice(first_row, first_row + count)
        return self.keys[layer][rows], self.values[layer][rows]


def _decode_where(first_row: int, starts: np.ndarray, counts: np.ndarray, seq: int) -> tuple | None:
    """Index of a decode step's single new token per row in a cache array (None: not a decode
    step). A plain slice when every row has the same length, else fancy indices (rows, starts)."""
    if seq != 1 or not bool(np.all(counts == 1)):
        return None
    rows = slice(first_row, first_row + len(starts))
    if bool(np.all(starts == starts[0])):
        return rows, slice(None), int(starts[0])
    return np.arange(rows.start, rows.stop), slice(None), starts
