"""The KV cache in GPU memory: the engine's KVCache contract (RowTable bookkeeping, `apply`,
`write`, `rows_view`) over one torch CUDA tensor instead of host arrays.

Storage is a single `[layers, 2 (K, V), rows + 1, kv_heads, max_len, head_dim]` tensor, so the
step's new K/V of all layers land with one scatter (decode) or one copy per row (prefill), and a
row block of one layer is a contiguous `[B, kv_heads, max_len, head_dim]` region TensorRT reads in
place. It starts zeroed: positions a row has not written are hidden by the bias, and zeros keep
them finite (0 x NaN would poison the softmax, uninitialised memory may hold NaN).
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import numpy as np

from edgevlm.runtime.kv_cache import KVCache, KVLayout, RowMove, RowTable


class DeviceKVCache(KVCache):
    supports_prefix_reuse = False  # its rows live on the GPU; host copies would cost more than prefill
    def __init__(self, layout: KVLayout, torch_dtype: Any, device: Any, stream: Any = None) -> None:
        import torch

        # KVCache.__init__ would allocate host arrays; this cache keeps its data on the device.
        self.stream = stream
        self.layout = layout
        self.table = RowTable(layout.rows)
        shape = (layout.num_layers, 2, layout.rows + 1, layout.kv_heads, layout.max_len, layout.head_dim)
        with self._on_stream():
            # Any: a torch tensor where the KVCache contract speaks of arrays (same indexing).
            self.storage: Any = cast(Any, torch.zeros(shape, dtype=torch_dtype, device=device))
        self.keys = [self.storage[i, 0] for i in range(layout.num_layers)]
        self.values = [self.storage[i, 1] for i in range(layout.num_layers)]

    def apply(self, moves: list[RowMove]) -> None:
        """Row moves, on the backend's stream: the engine calls this between steps, and the next
        step's reads must be ordered after these copies."""
        with self._on_stream():
            for move in moves:
                if move.length:
                    # One copy for all layers and both K and V; src and dst are distinct rows.
                    length = move.length
                    self.storage[:, :, move.dst, :, :length] = self.storage[:, :, move.src, :, :length]

    def _on_stream(self) -> Any:
        """Work on the backend's stream (a no-op for a cache without one, e.g. on the CPU)."""
        import torch

        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def write(self, layer: int, first_row: int, starts: np.ndarray, counts: np.ndarray,
              new_keys: Any, new_values: Any) -> None:
        """Per-layer store (the KVCache contract); the backend uses `write_all` instead."""
        for b, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
            self.keys[layer][first_row + b, :, start : start + count] = new_keys[b, :, :count]
            self.values[layer][first_row + b, :, start : start + count] = new_values[b, :, :count]

    def write_all(self, first_row: int, starts: np.ndarray, counts: np.ndarray, presents: Any,
                  index: tuple[Any, Any] | None = None) -> None:
        """Store every layer's new K/V at each row's own length.
        # presents: [layers, 2, batch, kv_heads, seq, head_dim]; starts, counts: [batch]
        `index` = (rows, starts) as device int64 tensors, for the one-token-per-row decode scatter."""
        batch, seq = presents.shape[2], presents.shape[4]
        if seq == 1 and bool(np.all(counts == 1)):
            rows, at = index if index is not None else self._decode_index(first_row, starts, presents.device)
            # Advanced indices on dims 2 and 4 put the batch first: [batch, layers, 2, kv, D].
            self.storage[:, :, rows, :, at] = presents[:, :, :batch, :, 0].permute(2, 0, 1, 3, 4)
            return
        for b, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
            self.storage[:, :, first_row + b, :, start : start + count] = presents[:, :, b, :, :count]

    @staticmethod
    def _decode_index(first_row: int, starts: np.ndarray, device: Any) -> tuple[Any, Any]:
        import torch

        rows = torch.arange(first_row, first_row + len(starts), device=device)
        return rows, torch.as_tensor(starts, dtype=torch.int64).to(device, non_blocking=True)

    def rows_view(self, layer: int, first_row: int, count: int) -> tuple[Any, Any]:
        """# -> 2 x [count, kv_heads, max_len, head_dim] device views"""
        rows = slice(first_row, first_row + count)
        return self.keys[layer][rows], self.values[layer][rows]

    def row_block_address(self, layer: int, kind: int, first_row: int) -> int:
        """Device address of `storage[layer, kind, first_row]`, what TensorRT binds as past_*."""
        return int(self.storage[layer, kind, first_row].data_ptr())
