"""`edgevlm bench make-model small`: the ~0.5 B configuration (counted on the meta device, no weights)."""

from __future__ import annotations

import pytest
import torch
from transformers import Glm4vForConditionalGeneration

from edgevlm.bench.make_model import config_for, make_model
from edgevlm.errors import UserError


def test_small_is_about_half_a_billion_parameters() -> None:
    config = config_for("small")
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (
        1024, 16, 8, 2)
    assert text.vocab_size == 151552 and (vision.depth, vision.hidden_size) == (6, 768)
    with torch.device("meta"):
        model = Glm4vForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    assert 0.4e9 < params < 0.65e9


def test_refuses_to_overwrite(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="--force"):
        make_model("small", tmp_path)
    with pytest.raises(UserError, match="size"):
        make_model("huge", tmp_path / "new")
