"""`vision.cpu.onnx`: the vision tower in ONNX Runtime's CPU form, one image (or video frame) per
call, attention as com.microsoft MultiHeadAttention without a mask.

`vision.onnx` packs several images into one call and separates them with a block-diagonal
`attention_bias`: it computes every cross-image score and then hides it, and its attention is
plain ops (MatMul, Add, Softmax, MatMul) that write each layer's [heads, patches, patches] scores
to memory and read them back. On a CPU neither pays: the cores are busy inside one image already,
so packing only adds the masked work, and the unfused scores were about half of a vision call.
This form takes one attention block (an image, or a frame of a video) per call and no bias, so
ONNX Runtime's MultiHeadAttention runs its fused kernel (a microbenchmark, 1,024 patches: 15.7 ms a
layer unfused, 10.5 fused with a bias, 7.6 fused without). The runtime splits a packed batch at
its blocks (`runtime/vision_inputs.py: attention_blocks`); every part of the tower but attention
works patch by patch or merge block by merge block, so the split is exact.

Queries and keys are rotated together by one com.microsoft RotaryEmbedding per layer instead of
two chains of Mul/Split/Neg/Concat/Add (those were 13 % of a demo-model vision call).

The position table is resampled by a matmul: each patch's bicubic weights over the table (4 x 4
taps, border-clamped, PyTorch's grid_sample coefficients) times the table, where the portable
graph has a GridSample (ONNX Runtime's CPU GridSample took 2.2 ms of a 17 ms demo call at 576
patches, the matmul ~0.3 ms; the same values to float32 rounding).

Inputs are `vision.onnx`'s without `attention_bias`; the weights are `vision.onnx`'s own
(`shared_weights.py`).
"""

from __future__ import annotations

from typing import Any

import torch

from edgevlm.export.vision import AXES, INPUT_NAMES, VisionEncoder

OP = "com.microsoft::MultiHeadAttention"
ROTARY = "com.microsoft::RotaryEmbedding"
CPU_INPUT_NAMES = tuple(n for n in INPUT_NAMES if n != "attention_bias")


class MhaVisionEncoder(VisionEncoder):
    def input_names(self) -> tuple[str, ...]:
        return CPU_INPUT_NAMES

    def axes(self) -> dict[str, dict[int, str]]:
        return {name: axes for name, axes in AXES.items() if name != "attention_bias"}

    def example_inputs(self, num_image_tokens: int = 6) -> tuple[torch.Tensor, ...]:
        return super().example_inputs(num_image_tokens)[:3]

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        return super().dynamic_shapes()[:3]

    def forward(  # type: ignore[override]
        self, pixel_values: torch.Tensor, pos_grid: torch.Tensor, rotary_pos: torch.Tensor
    ) -> torch.Tensor:
        # one attention block's patches -> its image tokens
        return super().forward(pixel_values, pos_grid, rotary_pos, None)

    def position_embedding(self, pos_grid: torch.Tensor) -> torch.Tensor:
        # pos_grid: [patches, 2] (x, y) in [-1, 1] -> [patches, hidden] float32
        side = self.table_side
        table = self.visual.embeddings.position_embedding.weight.to(torch.float32)  # [side * side, hidden]
        wx, wy = bicubic_weights(pos_grid[:, 0], side), bicubic_weights(pos_grid[:, 1], side)
        # Table row r * side + c is (y=r, x=c): a patch's weight on it is wy[r] * wx[c].
        weights = (wy.unsqueeze(2) * wx.unsqueeze(1)).reshape(pos_grid.shape[0], side * side)
        return weights @ table

    def rotate_qk(
        self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # q, k: [patches, heads, head_dim]; cos, sin: [patches, 1, head_dim], both halves equal
        # (rotate_half pairs element i with i + head_dim / 2, one angle per pair). The op takes a
        # cache row per position: here each patch is its own position, its row its own angles.
        patches, heads = q.shape[0], 2 * self.num_heads
        half = self.head_dim // 2
        qk = torch.cat((q, k), dim=1).reshape(1, patches, heads * self.head_dim)
        positions = torch.arange(patches, device=q.device).unsqueeze(0)
        rotated = torch.onnx.ops.symbolic(
            ROTARY, (qk, positions, cos[:, 0, :half].contiguous(), sin[:, 0, :half].contiguous()),
            {"num_heads": heads, "interleaved": 0}, dtype=qk.dtype, shape=qk.shape, version=1,
        )
        q, k = rotated.view(patches, heads, self.head_dim).split(self.num_heads, dim=1)
        return q, k

    def attention(
        self, attn: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        # x: [patches, hidden]; q, k, v: [patches, heads, head_dim], fed as [1, patches, hidden]
        hidden = self.num_heads * self.head_dim
        q, k, v = (t.reshape(1, -1, hidden) for t in self.rotated_qkv(attn, x, cos, sin))
        out = torch.onnx.ops.symbolic(
            OP, (q, k, v), {"num_heads": self.num_heads, "scale": self.head_dim**-0.5},
            dtype=x.dtype, shape=q.shape, version=1,
        )
        return attn.proj(out.reshape(x.shape[0], hidden))


CUBIC_A = -0.75  # PyTorch's (and ONNX Runtime's) bicubic coefficient


def bicubic_weights(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Each point's weight on every entry of a `size`-long axis, as grid_sample(mode="bicubic",
    padding_mode="border", align_corners=False) samples it: 4 taps around the point, their
    indices clamped to the axis (so an edge entry can take several taps' weights).
    # coord: [points] normalised to [-1, 1] -> [points, size]"""
    source = ((coord + 1) * size - 1) / 2
    left = torch.floor(source)
    t = source - left
    coeffs = torch.stack((_far(t + 1), _near(t), _near(1 - t), _far(2 - t)), dim=-1)  # [points, 4]
    taps = (left.unsqueeze(-1) + torch.arange(-1, 3, dtype=source.dtype)).clamp(0, size - 1)
    onehot = (taps.unsqueeze(-1) == torch.arange(size, dtype=source.dtype)).to(source.dtype)  # [points, 4, size]
    return (coeffs.unsqueeze(-1) * onehot).sum(1)


def _near(x: torch.Tensor) -> torch.Tensor:
    """Cubic convolution weight of a tap at distance x <= 1."""
    return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1


def _far(x: torch.Tensor) -> torch.Tensor:
    """Cubic convolution weight of a tap at distance 1 < x < 2."""
    return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A
