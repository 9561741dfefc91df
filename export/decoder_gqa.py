"""`decoder.cpu.onnx`: the decoder in ONNX Runtime's CPU form, attention as com.microsoft
GroupQueryAttention over a cache it updates in place.

`decoder.onnx` (the portable form TensorRT builds from) slices each row's cached keys out of the
`max_len` buffer and concatenates the new ones in every layer and step: at 16 decoding rows that
copying was 44 % of a step (Slice 30 %, Concat 14 %, ONNX Runtime profile). ONNX Runtime's
GroupQueryAttention takes the whole buffer as `past_key` and, when `present_key` is bound to the
same memory, writes the new tokens at each row's length and attends in place: no copy at all.

Inputs differ from `decoder.onnx` only in how the graph learns what each query sees: instead of
`attention_bias`, `seqlens_k` [batch] int32 (each row's cached length + seq - 1) and
`total_sequence_length` (a scalar: max(seqlens_k) + 1). Attention is causal from each row's
cached length; rows shorter than `seq` are right-padded, and their padding writes keys past the
row's length, which the next step overwrites (BUNDLE.md). Outputs `present_*` are the whole
`[batch, kv_heads, max_len, head_dim]` buffers. The graph is written for the CPU execution
provider only; weights are `decoder.onnx`'s own (`shared_weights.py`).

Queries and keys are rotated together by one com.microsoft RotaryEmbedding per layer (interleaved
pairs, partial rotary), fed each token's own angles, instead of Decoder's Mul/Slice/Mul/Add chain.
"""

from __future__ import annotations

from typing import Any

import torch

from edgevlm.export.decoder import Decoder, Projections

OP = "com.microsoft::GroupQueryAttention"
ROTARY = "com.microsoft::RotaryEmbedding"


def input_names(num_layers: int) -> list[str]:
    names = ["inputs_embeds", "position_ids", "seqlens_k", "total_sequence_length", "logits_index"]
    for i in range(num_layers):
        names += [f"past_key_{i}", f"past_value_{i}"]
    return names


def axes(num_layers: int) -> dict[str, dict[int, str]]:
    named: dict[str, dict[int, str]] = {
        "inputs_embeds": {0: "batch", 1: "seq"},
        "position_ids": {1: "batch", 2: "seq"},
        "seqlens_k": {0: "batch"},
        "logits_index": {0: "batch"},
        "logits": {0: "batch"},
    }
    for i in range(num_layers):
        for kind in ("key", "value"):
            named[f"past_{kind}_{i}"] = named[f"present_{kind}_{i}"] = {0: "batch", 2: "max_len"}
    return named


class GqaDecoder(Decoder):
    """The same layers, norms and rotary as `Decoder`; only attention and the mask inputs differ."""

    def input_names(self) -> list[str]:
        return input_names(len(self.layers))

    def axes(self) -> dict[str, dict[int, str]]:
        return axes(len(self.layers))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        embeds, positions, _bias, logits_index, *caches = super().example_inputs()
        batch, seq = embeds.shape[:2]
        seqlens = torch.full((batch,), 4 + seq - 1, dtype=torch.int32)  # a past of 4 (Decoder's example)
        return (embeds, positions, seqlens, torch.tensor(4 + seq, dtype=torch.int32), logits_index, *caches)

    def dynamic_shapes(self) -> tuple[Any, ...]:
        embeds, positions, _bias, logits_index, caches = super().dynamic_shapes()
        return (embeds, positions, {0: embeds[0]}, None, logits_index, caches)

    def forward(  # type: ignore[override]
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        seqlens_k: torch.Tensor,
        total_sequence_length: torch.Tensor,
        logits_index: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        # seqlens_k: [batch] i32; total_sequence_length: [] i32; past: [batch, kv_heads, max_len, head_dim]
        return self.run_layers(inputs_embeds, position_ids, logits_index, past, (seqlens_k, total_sequence_length))

    def rotary(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: [3, batch, seq] -> cos, sin: [batch * seq, rotary_dim / 2], RotaryEmbedding's
        # cache with one row per token; interleaved pairs share an angle, so every other one
        half = self.angles(position_ids)[..., 0::2].flatten(0, 1)
        return half.cos().to(dtype), half.sin().to(dtype)

    def apply_rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: [batch, seq, heads, head_dim]; cos/sin: this class's rotary(), token b * seq + s in row
        # b * seq + s (the op looks rows up by position: each token is its own position here)
        batch, seq, heads, head_dim = x.shape
        positions = torch.arange(batch * seq, device=x.device).view(batch, seq)
        flat = x.reshape(batch, seq, heads * head_dim)
        rotated = torch.onnx.ops.symbolic(
            ROTARY, (flat, positions, cos, sin),
            {"num_heads": heads, "rotary_embedding_dim": self.rotary_dim, "interleaved": 1},
            dtype=flat.dtype, shape=flat.shape, version=1,
        )
        return rotated.view(batch, seq, heads, head_dim)

    def attention(
        self,
        attn: Projections,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        mask: tuple[Any, ...],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # x: [batch, seq, hidden] -> out [batch, seq, hidden], present K/V [batch, kv_heads, max_len, head_dim]
        seqlens_k, total = mask
        batch, seq, _ = x.shape
        # GroupQueryAttention reads [batch, seq, heads * head_dim]: the layout they come in.
        qk, v = self.rotated_qk_and_v(attn, x, cos, sin)
        q, k = qk.split((self.num_heads, self.num_kv_heads), dim=2)
        out, present_key, present_value = torch.onnx.ops.symbolic_multi_out(
            OP,
            (q.reshape(batch, seq, -1), k.reshape(batch, seq, -1), v, past_key, past_value,
             seqlens_k, total),
            {"num_heads": self.num_heads, "kv_num_heads": self.num_kv_heads, "scale": self.head_dim**-0.5},
            dtypes=(x.dtype, past_key.dtype, past_value.dtype),
            shapes=(q.reshape(batch, seq, -1).shape, past_key.shape, past_value.shape),
            version=1,
        )
        return attn.o_proj(out), present_key, present_value
