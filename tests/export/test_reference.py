"""The float32 reference over lower-precision weights: same math as widening the whole model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from edgevlm.export import reference
from edgevlm.export.checkpoint import load_model
from edgevlm.export.reference import Float32Embedding, Float32Linear, float32_reference


def test_linear_in_chunks_equals_a_widened_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "CHUNK_BYTES", 4 * 16 * 3)  # 3 rows per chunk: 5 chunks
    linear = nn.Linear(16, 13).half()
    x = torch.randn(2, 5, 16)
    expected = nn.functional.linear(x, linear.weight.float(), linear.bias.float())
    wrapped = Float32Linear(linear)
    assert wrapped.rows == 3 and wrapped.stored.dtype == torch.float16
    torch.testing.assert_close(wrapped(x.half()), nn.functional.linear(x.half().float(), linear.weight.float(),
                                                                       linear.bias.float()))
    torch.testing.assert_close(wrapped(x), expected)


def test_embedding_widens_only_the_gathered_rows() -> None:
    embedding = nn.Embedding(10, 4).half()
    out = Float32Embedding(embedding)(torch.tensor([[1, 7]]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, embedding.weight.float()[[1, 7]][None])


def test_reference_matches_the_fully_widened_model(demo_checkpoint: Path) -> None:
    half = load_model(demo_checkpoint, torch.float16)
    widened = copy.deepcopy(half).float()
    ref = float32_reference(half)
    stored = [m.stored.dtype for m in ref.modules() if isinstance(m, (Float32Linear, Float32Embedding))]
    assert stored and set(stored) == {torch.float16}  # the big matrices stay as exported
    assert all(p.dtype == torch.float32 for p in ref.parameters())
    ids = torch.randint(20, 200, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(ref(input_ids=ids).logits, widened(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_a_float32_model_is_left_alone(hf_model: Any) -> None:
    assert float32_reference(hf_model) is hf_model
    assert not any(isinstance(m, Float32Linear) for m in hf_model.modules())
