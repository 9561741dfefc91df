"""The decoder module (the graph's torch source) against HF's language model with its own cache."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers.models.glm4v.modeling_glm4v import rotate_half_llm

from edgevlm.export.decoder import Decoder, axes, input_names, mrope_axes, output_names, rotate_half_interleaved


def _causal(seq: int, past: int = 0) -> torch.Tensor:
    # [1, 1, seq, past + seq]
    return torch.triu(torch.full((seq, past + seq), float("-inf")), past + 1)[None, None]


def test_rotate_half_interleaved_is_hf_rotate_half_llm() -> None:
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(rotate_half_interleaved(x), rotate_half_llm(x))


def test_mrope_axes_follow_the_sections() -> None:
    assert mrope_axes([1, 2, 1], 8).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="mrope_section"):
        mrope_axes([8, 12, 12], 32)


def test_names_and_axes_cover_every_layer() -> None:
    assert input_names(2)[-1] == "past_value_1" and output_names(2)[-1] == "present_value_1"
    assert set(axes(2)) == {*input_names(2), *output_names(2)}


def test_prefill_then_decode_matches_hf(hf_model: Any) -> None:
    decoder = Decoder(hf_model).eval()
    config = hf_model.config.text_config
    ids = torch.randint(20, config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(1))
    layers, kv, head_dim = config.num_hidden_layers, config.num_key_value_heads, decoder.head_dim
    cache = [torch.zeros(1, kv, 16, head_dim) for _ in range(2 * layers)]
    embed = hf_model.model.language_model.embed_tokens
    hf_model.model.rope_deltas = None  # HF keeps the last multimodal prompt's offset; this one is text only
    with torch.no_grad():
        hf = hf_model(input_ids=ids, use_cache=True)
        positions = torch.arange(9).view(1, 1, -1).expand(3, 1, -1)
        out = decoder(embed(ids), positions, _causal(9), torch.tensor([8]), *cache)
        torch.testing.assert_close(out[0][0], hf.logits[0, -1], rtol=1e-5, atol=1e-5)
        for i, layer in enumerate(hf.cache.layers):
            torch.testing.assert_close(out[1 + 2 * i], layer.keys, rtol=1e-5, atol=1e-5)
            cache[2 * i][:, :, :9], cache[2 * i + 1][:, :, :9] = out[1 + 2 * i], out[2 + 2 * i]
        token = hf.logits[0, -1].argmax().view(1, 1)
        hf_next = hf_model(input_ids=token, cache=hf.cache, use_cache=True)
        step = decoder(embed(token), torch.full((3, 1, 1), 9), torch.zeros(1, 1, 1, 10), torch.tensor([0]), *cache)
    torch.testing.assert_close(step[0][0], hf_next.logits[0, -1], rtol=1e-5, atol=1e-5)


def test_a_row_that_sees_no_key_stays_finite(hf_model: Any) -> None:
    # Padding rows may be hidden from everything; their outputs must not turn into NaN.
    decoder = Decoder(hf_model).eval()
    config = hf_model.config.text_config
    cache = [torch.zeros(1, config.num_key_value_heads, 4, decoder.head_dim) for _ in range(2 * len(decoder.layers))]
    with torch.no_grad():
        out = decoder(torch.randn(1, 2, config.hidden_size), torch.zeros(3, 1, 2, dtype=torch.int64),
                      torch.full((1, 1, 2, 2), float("-inf")), torch.tensor([1]), *cache)
    assert all(torch.isfinite(t).all() for t in out)
