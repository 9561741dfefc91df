"""The TensorRT backend's reused device buffers (torch CUDA tensors), allocated once at their
largest size; each call uses a leading view of them.

Every view starts at its buffer's first element, so a buffer's address never changes: TensorRT
contexts and captured CUDA graphs can keep pointing at it whatever the step's shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class FlatBuffer:
    def __init__(self, numel: int, dtype: Any, device: Any) -> None:
        import torch

        self.data = torch.empty(max(1, numel), dtype=dtype, device=device)

    @property
    def address(self) -> int:
        return int(self.data.data_ptr())

    def view(self, shape: tuple[int, ...]) -> Any:
        count = math.prod(shape)
        if count > self.data.numel():
            raise ValueError(f"a {shape} tensor does not fit the {self.data.numel()}-element buffer")
        return self.data[:count].view(shape)

    def upload(self, array: np.ndarray) -> Any:
        """Copy a host array into the buffer's leading view, on the current stream."""
        import torch

        view = self.view(tuple(array.shape))
        view.copy_(torch.from_numpy(np.ascontiguousarray(array)), non_blocking=True)
        return view


@dataclass(frozen=True, slots=True)
class DecoderSizes:
    tokens: int  # batch x seq of the largest call
    rows: int
    max_len: int
    hidden: int
    vocab: int
    num_layers: int
    kv_heads: int
    head_dim: int


class DecoderBuffers:
    """Inputs, logits and the new K/V of all layers (`[layers, 2, tokens * kv_heads * head_dim]`)."""

    def __init__(self, sizes: DecoderSizes, dtypes: dict[str, Any], device: Any) -> None:
        import torch

        tokens = max(sizes.tokens, sizes.rows)
        self.sizes = sizes
        self.inputs_embeds = FlatBuffer(tokens * sizes.hidden, dtypes["inputs_embeds"], device)
        self.position_ids = FlatBuffer(3 * tokens, dtypes["position_ids"], device)
        self.attention_bias = FlatBuffer(tokens * sizes.max_len, dtypes["attention_bias"], device)
        self.logits_index = FlatBuffer(sizes.rows, dtypes["logits_index"], device)
        self.logits = FlatBuffer(sizes.rows * sizes.vocab, dtypes["logits"], device)
        per_layer = tokens * sizes.kv_heads * sizes.head_dim
        self.presents = torch.empty((sizes.num_layers, 2, per_layer), dtype=dtypes["present_key_0"], device=device)
        # Page-locked, so the logits copy back is a DMA the stream orders.
        self.host_logits = torch.empty((sizes.rows, sizes.vocab), dtype=torch.float32, pin_memory=True)

    def present_views(self, batch: int, seq: int) -> Any:
        """# -> [layers, 2, batch, kv_heads, seq, head_dim]"""
        s = self.sizes
        count = batch * s.kv_heads * seq * s.head_dim
        return self.presents[:, :, :count].view(s.num_layers, 2, batch, s.kv_heads, seq, s.head_dim)

    def output_addresses(self) -> dict[str, int]:
        addresses = {"logits": self.logits.address}
        for layer in range(self.sizes.num_layers):
            addresses[f"present_key_{layer}"] = int(self.presents[layer, 0].data_ptr())
            addresses[f"present_value_{layer}"] = int(self.presents[layer, 1].data_ptr())
        return addresses

    def input_addresses(self) -> dict[str, int]:
        return {
            "inputs_embeds": self.inputs_embeds.address,
            "position_ids": self.position_ids.address,
            "attention_bias": self.attention_bias.address,
            "logits_index": self.logits_index.address,
        }

    def download_logits(self, batch: int) -> np.ndarray:
        """Logits of the first `batch` rows to host memory; the caller synchronizes the stream
        before reading the result. # -> [batch, vocab] float32 (a view of a reused buffer)"""
        host = self.host_logits[:batch]
        host.copy_(self.logits.view((batch, self.sizes.vocab)), non_blocking=True)
        return host.numpy()


class VisionBuffers:
    def __init__(self, max_patches: int, patch_dim: int, out_tokens: int, out_hidden: int,
                 dtypes: dict[str, Any], device: Any) -> None:
        self.pixel_values = FlatBuffer(max_patches * patch_dim, dtypes["pixel_values"], device)
        self.pos_grid = FlatBuffer(max_patches * 2, dtypes["pos_grid"], device)
        self.rotary_pos = FlatBuffer(max_patches * 2, dtypes["rotary_pos"], device)
        self.attention_bias = FlatBuffer(max_patches * max_patches, dtypes["attention_bias"], device)
        self.image_embeds = FlatBuffer(out_tokens * out_hidden, dtypes["image_embeds"], device)

    def addresses(self) -> dict[str, int]:
        names = ("pixel_values", "pos_grid", "rotary_pos", "attention_bias", "image_embeds")
        return {name: getattr(self, name).address for name in names}
