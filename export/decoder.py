"""`decoder.onnx` as a torch module: GLM-4V's language model + lm_head over the KV interface.

Inputs are the runtime's preallocated cache rows (`past_key_{i}` [batch, kv_heads, max_len,
head_dim]); the graph reads their first `past = attention_bias.shape[-1] - seq` positions and
returns only the new tokens' keys/values (BUNDLE.md). Weights are the HF modules' own, but for each
layer's query, key and value projections, joined into one (`Projections`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgevlm.export.vision import rms_norm

# Any bias at or below this hides a key; clamping -inf to it keeps a row that sees no key at all
# (a padding row) finite, so its K/V never poison later layers with NaN (0 * NaN = NaN).
HIDDEN_BIAS = -1.0e30


def input_names(num_layers: int) -> list[str]:
    """The decoder graph's input names, in order."""
    names = ["inputs_embeds", "position_ids", "attention_bias", "logits_index"]
    for i in range(num_layers):
        names += [f"past_key_{i}", f"past_value_{i}"]
    return names


def output_names(num_layers: int) -> list[str]:
    """The decoder graph's output names, in order."""
    names = ["logits"]
    for i in range(num_layers):
        names += [f"present_key_{i}", f"present_value_{i}"]
    return names


def axes(num_layers: int) -> dict[str, dict[int, str]]:
    """The graph's dynamic axes, named as in BUNDLE.md (total_len = past + seq)."""
    named: dict[str, dict[int, str]] = {
        "inputs_embeds": {0: "batch", 1: "seq"},
        "position_ids": {1: "batch", 2: "seq"},
        "attention_bias": {0: "batch", 2: "seq", 3: "total_len"},
        "logits_index": {0: "batch"},
        "logits": {0: "batch"},
    }
    for i in range(num_layers):
        named[f"past_key_{i}"] = named[f"past_value_{i}"] = {0: "batch", 2: "max_len"}
        named[f"present_key_{i}"] = named[f"present_value_{i}"] = {0: "batch", 2: "seq"}
    return named


def rotate_half_interleaved(x: torch.Tensor) -> torch.Tensor:
    """GLM's `rotate_half_llm`: pairs (x0, x1), (x2, x3) ... -> (-x1, x0), (-x3, x2) ...

    Written as flip-each-pair times (-1, +1): a reversed Slice and one Mul in ONNX (exact, the
    signs are +-1) instead of the split / negate / stack / concat chain of the literal form."""
    return pair_signs(flip_pairs(x))


def flip_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1), (x2, x3) ... -> (x1, x0), (x3, x2) ...: one reversed Slice in ONNX."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def pair_signs(x: torch.Tensor) -> torch.Tensor:
    """Negate the first of each pair (exact: a multiply by -1 / +1)."""
    sign = torch.tensor([-1.0, 1.0], dtype=x.dtype)
    return (x.unflatten(-1, (-1, 2)) * sign).flatten(-2)


def mrope_axes(mrope_section: list[int], rotary_dim: int) -> torch.Tensor:
    """For each of the `rotary_dim` rotated channels, which position axis (t=0, h=1, w=2) drives it.

    HF splits the rotary_dim / 2 frequencies into sections [t, h, w] (cycled), then repeats each
    frequency twice (interleaved pairs)."""
    axes = [i % 3 for i, size in enumerate(mrope_section) for _ in range(size)]
    if len(axes) != rotary_dim // 2:
        raise ValueError(f"mrope_section {mrope_section} does not cover rotary_dim / 2 = {rotary_dim // 2}")
    return torch.tensor(axes, dtype=torch.int64).repeat_interleave(2)


class Projections(nn.Module):
    """A layer's attention projections, with q_proj, k_proj and v_proj joined into one weight: one
    MatMul and one bias Add per layer instead of three of each. At batch 1 a decode step costs per
    node as well as per byte: ONNX Runtime CPU form, interleaved medians, `small` 48.1 vs 49.4 ms a
    step at batch 1, demo 0.49 vs 0.54 ms (1.92 vs 2.00 ms at 16 rows), logits identical. q_proj,
    k_proj and v_proj then read their parts of the joined weight, so the model is not held twice
    (an export's peak RSS is budgeted); o_proj stays the module's own."""

    qkv_weight: nn.Parameter
    qkv_bias: nn.Parameter | None

    def __init__(self, attn: Any) -> None:
        super().__init__()
        parts = (attn.q_proj, attn.k_proj, attn.v_proj)
        # Parameters, as the model's own weights are, so the exporter writes them out alike.
        self.qkv_weight = nn.Parameter(_join([p.weight for p in parts]), requires_grad=False)
        biases = [p.bias for p in parts]
        self.qkv_bias = None if None in biases else nn.Parameter(_join(biases), requires_grad=False)
        self.o_proj = attn.o_proj
        self.value_size = attn.v_proj.weight.shape[0]

    def qk_and_v(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [batch, seq, hidden] -> queries and keys [batch, seq, (heads + kv_heads) * head_dim],
        # values [batch, seq, kv_heads * head_dim]
        qkv = nn.functional.linear(x, self.qkv_weight, self.qkv_bias)
        return qkv.split((qkv.shape[-1] - self.value_size, self.value_size), dim=-1)


class Layer(nn.Module):
    """What the graph reads of a transformers decoder layer: its norms and MLP (the layer's own
    modules) and its attention's `Projections`. q_proj, k_proj and v_proj are not reachable from
    here: the exporter would otherwise trace them as unused inputs, and onnxscript's rewrite rules,
    which keep the last graph they matched, would keep the checkpoint's memory map resident
    through them (export peak RSS 2.6 x the model's bytes, over its 2.5 budget)."""

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.input_layernorm = layer.input_layernorm
        self.post_self_attn_layernorm = layer.post_self_attn_layernorm
        self.post_attention_layernorm = layer.post_attention_layernorm
        self.post_mlp_layernorm = layer.post_mlp_layernorm
        self.mlp = layer.mlp
        self.self_attn = Projections(layer.self_attn)


def _join(params: list[Any]) -> torch.Tensor:
    """The parameters concatenated along dim 0; each parameter becomes a view of its rows of the
    result, so its old storage is freed (values unchanged)."""
    joined = torch.cat([p.detach() for p in params])
    start = 0
    for p in params:
        rows = p.shape[0]
        p.data = joined[start : start + rows]
        start += rows
    return joined


class Decoder(nn.Module):
    """One step (prefill chunk or decode) of the KV-cached language model."""

    layers: Any  # Layer list
    norm: Any
    lm_head: Any
    eps: float
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rotary_dim: int
    rotary_axes: torch.Tensor
    inv_freq: torch.Tensor

    def __init__(self, model: Any) -> None:
        super().__init__()
        text = model.model.language_model
        config = text.config
        self.layers = nn.ModuleList(Layer(layer) for layer in text.layers)
        self.norm = text.norm
        self.lm_head = model.lm_head
        self.eps = config.rms_norm_eps
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        inv_freq = text.rotary_emb.inv_freq.to(torch.float32)
        self.rotary_dim = 2 * inv_freq.shape[0]
        rotary_axes = mrope_axes(list(text.rotary_emb.mrope_section), self.rotary_dim)
        self.register_buffer("rotary_axes", rotary_axes, persistent=False)
        self.register_buffer("inv_freq", inv_freq.repeat_interleave(2), persistent=False)

    def input_names(self) -> list[str]:
        return input_names(len(self.layers))

    def output_names(self) -> list[str]:
        return output_names(len(self.layers))

    def axes(self) -> dict[str, dict[int, str]]:
        return axes(len(self.layers))

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Inputs to trace with; every dynamic size distinct so no two dims are traced as one."""
        batch, seq, past, max_len = 2, 3, 4, 11
        dtype = self.lm_head.weight.dtype
        hidden = self.lm_head.weight.shape[1]
        # One tensor per cache input: a tensor passed twice is traced as one aliased input.
        caches = [torch.zeros(batch, self.num_kv_heads, max_len, self.head_dim, dtype=dtype)
                  for _ in range(2 * len(self.layers))]
        return (
            torch.zeros(batch, seq, hidden, dtype=dtype),
            torch.zeros(3, batch, seq, dtype=torch.int64),
            torch.zeros(batch, 1, seq, past + seq, dtype=torch.float32),
            torch.zeros(batch, dtype=torch.int64),
            *caches,
        )

    def dynamic_shapes(self) -> tuple[Any, ...]:
        """torch.export dims for `example_inputs` (the caches are one varargs tuple)."""
        dim = torch.export.Dim
        batch, seq, total, max_len = dim("batch"), dim("seq"), dim("total_len"), dim("max_len")
        cache = {0: batch, 2: max_len}
        return (
            {0: batch, 1: seq},
            {1: batch, 2: seq},
            {0: batch, 2: seq, 3: total},
            {0: batch},
            tuple(cache for _ in range(2 * len(self.layers))),
        )

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_bias: torch.Tensor,
        logits_index: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        # inputs_embeds: [batch, seq, hidden]; position_ids: [3, batch, seq] i64
        # attention_bias: [batch, 1, seq, past + seq] f32; logits_index: [batch] i64
        # past[2i], past[2i+1]: [batch, kv_heads, max_len, head_dim]
        seq = inputs_embeds.shape[1]
        num_past = attention_bias.shape[-1] - seq
        bias = attention_bias.clamp(min=HIDDEN_BIAS).unsqueeze(2)  # [batch, 1, 1, seq, total]
        return self.run_layers(inputs_embeds, position_ids, logits_index, past, (bias, num_past))

    def run_layers(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        logits_index: torch.Tensor,
        past: tuple[torch.Tensor, ...],
        mask: tuple[Any, ...],
    ) -> tuple[torch.Tensor, ...]:
        """Every layer, the final norm and lm_head at `logits_index`; `mask` is whatever this form's
        `attention` needs to know which keys each query sees."""
        cos, sin = self.rotary(position_ids, inputs_embeds.dtype)
        h = inputs_embeds
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            h, key, value = self.layer(layer, h, cos, sin, past[2 * i], past[2 * i + 1], mask)
            presents += [key, value]
        h = rms_norm(h, self.norm.weight, self.eps)
        index = logits_index.view(-1, 1, 1).expand(-1, 1, h.shape[-1])
        last = torch.gather(h, 1, index).squeeze(1)  # [batch, hidden]
        logits = self.lm_head(last).to(torch.float32)
        return (logits, *presents)

    def rotary(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids: [3, batch, seq] -> cos, sin: [batch, seq, 1, head_dim] in the model dtype
        angles = self.angles(position_ids)
        # Partial rotary over the whole head: the channels past rotary_dim get cos 1 and sin 0,
        # so x * cos + rotate(x) * sin leaves them exactly as they are, without slicing each
        # head into rotated and kept parts and concatenating them again in every layer.
        keep = self.head_dim - self.rotary_dim
        cos = torch.nn.functional.pad(angles.cos(), (0, keep), value=1.0)
        # rotate_half_interleaved(x) * sin == flip_pairs(x) * pair_signs(sin): the pair signs go
        # on sin once per step here, not on every layer's queries and keys (ONNX Runtime's
        # broadcast Mul over a trailing pair axis was 3 % of a batch-16 decode step per layer).
        sin = pair_signs(torch.nn.functional.pad(angles.sin(), (0, keep), value=0.0))
        return cos.to(dtype).unsqueeze(2), sin.to(dtype).unsqueeze(2)

    def angles(self, position_ids: torch.Tensor) -> torch.Tensor:
        # position_ids: [3, batch, seq] -> [batch, seq, rotary_dim] float32 (pairs share an angle)
        positions = position_ids.index_select(0, self.rotary_axes)  # [rotary_dim, batch, seq]
        return positions.permute(1, 2, 0).to(torch.float32) * self.inv_freq

    def layer(
        self,
        layer: Layer,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        past_key: torch.Tensor,
        past_value: torch.Tensor,
        mask: tuple[Any, ...],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # h: [batch, seq, hidden] -> h, new key, new value ([batch, kv_heads, seq, head_dim])
        attn_in = rms_norm(h, layer.input_layernorm.weight, self.eps)
        attn_out, key, value = self.attention(layer.self_attn, attn_in, cos, sin, past_key, past_value, mask)
        h = h + rms_norm(attn_out, layer.post_self_attn_layernorm.weight, self.eps)
        mlp_out = layer.mlp(rms_norm(h, layer.post_attention_layernorm.weight, self.eps))
        h = h + rms_norm(mlp_out, layer.post_mlp_layernorm.weight, self.eps)
        return h, key, value

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
        # x: [batch, seq, hidden]; q: [batch, heads, seq, head_dim]; k, v: [batch, kv_heads, seq, head_dim]
        # mask: (bias [batch, 1, 1, seq, total], num_past)
        bias, num_past = mask
        batch, seq, _ = x.shape
        qk, v = self.rotated_qk_and_v(attn, x, cos, sin)
        q, k = qk.transpose(1, 2).split((self.num_heads, self.num_kv_heads), dim=1)
        v = v.view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        keys = torch.cat((past_key[:, :, :num_past], k), dim=2)  # [batch, kv_heads, total, head_dim]
        values = torch.cat((past_value[:, :, :num_past], v), dim=2)
        # GQA without copying the cache: query heads grouped per KV head, broadcast over the group.
        groups = self.num_heads // self.num_kv_heads
        q = q.reshape(batch, self.num_kv_heads, groups, seq, self.head_dim)
        scores = torch.matmul(q, keys.unsqueeze(2).transpose(-1, -2)) * (self.head_dim**-0.5)
        probs = torch.softmax(scores.to(torch.float32) + bias, dim=-1).to(x.dtype)
        out = torch.matmul(probs, values.unsqueeze(2))  # [batch, kv_heads, groups, seq, head_dim]
        out = out.reshape(batch, self.num_heads, seq, self.head_dim).transpose(1, 2).reshape(batch, seq, -1)
        return attn.o_proj(out), k, v

    def rotated_qk_and_v(
        self, attn: Projections, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys projected and rotated, and values projected: every form's attention
        starts from these.
        # x: [batch, seq, hidden] -> [batch, seq, heads + kv_heads, head_dim] (queries first),
        # [batch, seq, kv_heads * head_dim]"""
        batch, seq, _ = x.shape
        qk, v = attn.qk_and_v(x)
        # Query and key heads share cos/sin: one rotary over both, which the joined projection
        # already lays out side by side; at batch 1 a decode step costs per node, not per FLOP.
        qk = qk.view(batch, seq, self.num_heads + self.num_kv_heads, self.head_dim)
        return self.apply_rotary(qk, cos, sin), v

    def apply_rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: [batch, seq, heads, head_dim]; cos/sin cover the whole head (1 / 0 past rotary_dim);
        # sin carries the pair signs of rotate_half_interleaved (see rotary)
        return x * cos + flip_pairs(x) * sin
