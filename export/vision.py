"""`vision.onnx` as a torch module: GLM-4V's vision tower over the bundle's inputs (BUNDLE.md).

It reuses the HF tower's weights (no copies) and reproduces `Glm4vVisionModel.forward`, with the
three data-dependent parts taken as inputs: `pos_grid` (bicubic resampling of the position
table), `rotary_pos` (2-D rotary) and `attention_bias` (the per-image blocks of `cu_seqlens`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

INPUT_NAMES = ("pixel_values", "pos_grid", "rotary_pos", "attention_bias")
OUTPUT_NAMES = ("image_embeds",)
# The graph's dynamic axes, named as in BUNDLE.md.
AXES = {
    "pixel_values": {0: "num_patches"},
    "pos_grid": {0: "num_patches"},
    "rotary_pos": {0: "num_patches"},
    "attention_bias": {0: "num_patches", 1: "num_patches"},
    "image_embeds": {0: "num_image_tokens"},
}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """GLM's RMSNorm: statistics in float32, the weight applied in the input dtype."""
    # x: [..., hidden]
    # x / sqrt(.) rather than x * rsqrt(.): the same value, in the form ONNX Runtime fuses into one
    # SimplifiedLayerNormalization kernel (Pow, ReduceMean, Add, Sqrt, Div, Mul).
    h = x.to(torch.float32)
    h = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class VisionEncoder(nn.Module):
    """Flattened patches of one or more images -> merged image-token embeddings."""

    visual: Any  # transformers' Glm4vVisionModel
    num_heads: int
    head_dim: int
    merge: int
    eps: float
    patch_dim: int
    table_side: int

    def __init__(self, visual: Any) -> None:
        super().__init__()
        config = visual.config
        self.visual = visual
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.merge = config.spatial_merge_size
        self.eps = config.rms_norm_eps
        self.patch_dim = config.in_channels * config.temporal_patch_size * config.patch_size**2
        self.table_side = int(visual.embeddings.position_embedding.weight.shape[0] ** 0.5)

    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES

    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES

    def axes(self) -> dict[str, dict[int, str]]:
        return AXES

    def example_inputs(self, num_image_tokens: int = 6) -> tuple[torch.Tensor, ...]:
        """Inputs to trace with: one image of num_image_tokens merged tokens (values are irrelevant)."""
        n = num_image_tokens * self.merge**2
        dtype = self.visual.patch_embed.proj.weight.dtype
        return (
            torch.zeros(n, self.patch_dim, dtype=dtype),
            torch.zeros(n, 2, dtype=torch.float32),
            torch.zeros(n, 2, dtype=torch.int64),
            torch.zeros(n, n, dtype=torch.float32),
        )

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        """torch.export dims: patches come in whole merge blocks, so num_patches = merge^2 * tokens."""
        patches = self.merge**2 * torch.export.Dim("num_image_tokens")
        return ({0: patches}, {0: patches}, {0: patches}, {0: patches, 1: patches})

    def forward(
        self,
        pixel_values: torch.Tensor,
        pos_grid: torch.Tensor,
        rotary_pos: torch.Tensor,
        attention_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        # pixel_values: [patches, C*T*P*P]; pos_grid: [patches, 2] f32; rotary_pos: [patches, 2] i64
        # attention_bias: [patches, patches] f32 (None: one attention block, vision_mha.py)
        # -> [patches / merge^2, out_hidden]
        visual = self.visual
        proj = visual.patch_embed.proj
        # A Conv3d whose kernel equals its stride over a whole patch is a matmul on the flat patch.
        h = F.linear(pixel_values.to(proj.weight.dtype), proj.weight.flatten(1), proj.bias)
        h = rms_norm(h, visual.post_conv_layernorm.weight, self.eps)
        h = h + self.position_embedding(pos_grid).to(h.dtype)
        cos, sin = self.rotary(rotary_pos)
        for block in visual.blocks:
            h = self.block(block, h, cos, sin, attention_bias)
        h = rms_norm(h, visual.post_layernorm.weight, self.eps)
        return visual.merger(self.downsample(h))

    def position_embedding(self, pos_grid: torch.Tensor) -> torch.Tensor:
        # pos_grid: [patches, 2] -> [patches, hidden] float32
        table = self.visual.embeddings.position_embedding.weight
        side = self.table_side
        table = table.view(side, side, -1).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        grid = pos_grid.view(1, -1, 1, 2)
        sampled = F.grid_sample(table, grid, mode="bicubic", padding_mode="border", align_corners=False)
        return sampled.squeeze(0).squeeze(-1).transpose(0, 1)

    def rotary(self, rotary_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # rotary_pos: [patches, 2] -> cos, sin: [patches, 1, head_dim] float32
        inv_freq = self.visual.rotary_pos_emb.inv_freq.to(torch.float32)
        freqs = (rotary_pos.to(torch.float32).unsqueeze(-1) * inv_freq).flatten(1)
        angles = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()

    def block(
        self, block: Any, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        # h: [patches, hidden]
        h = h + self.attention(block.attn, rms_norm(h, block.norm1.weight, self.eps), cos, sin, bias)
        return h + block.mlp(rms_norm(h, block.norm2.weight, self.eps))

    def attention(
        self, attn: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        # x: [patches, hidden]; q, k, v: [patches, heads, head_dim] -> [heads, patches, head_dim]
        assert bias is not None, "the portable graph always takes attention_bias"
        q, k, v = (t.transpose(0, 1) for t in self.rotated_qkv(attn, x, cos, sin))
        scores = torch.matmul(q, k.transpose(1, 2)) * (self.head_dim**-0.5)
        probs = torch.softmax(scores.to(torch.float32) + bias, dim=-1).to(x.dtype)
        out = torch.matmul(probs, v).transpose(0, 1).reshape(x.shape[0], -1)
        return attn.proj(out)

    def rotated_qkv(
        self, attn: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries and keys rotated, and values, every form's attention starts from these.
        # x: [patches, hidden] -> q, k, v: [patches, heads, head_dim]"""
        q, k, v = attn.qkv(x).view(-1, 3, self.num_heads, self.head_dim).unbind(1)
        q, k = self.rotate_qk(q, k, cos, sin)
        return q, k, v

    def rotate_qk(
        self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # q, k: [patches, heads, head_dim]; cos, sin: [patches, 1, head_dim] (rotate_half's layout)
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(q.dtype)
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(k.dtype)
        return q, k

    def downsample(self, h: torch.Tensor) -> torch.Tensor:
        # h: [patches, hidden] -> [patches / merge^2, out_hidden]
        conv = self.visual.downsample
        m = self.merge
        # The merge x merge block of patches is consecutive in patch order, so the stride-m Conv2d
        # is a matmul on the block as it lies, flattened (m, m, hidden): the conv weight is permuted
        # to that order (a constant at export) instead of every block being transposed to the
        # weight's (hidden, m, m) (a Transpose of all patches, 0.5 ms of a 576-patch demo call).
        weight = conv.weight.permute(0, 2, 3, 1).flatten(1)
        return F.linear(h.reshape(-1, m * m * h.shape[-1]), weight, conv.bias)
