"""load_processor: the checkpoint's processor without torchvision, identical to the one it was saved from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevlm.demo.checkpoint import build_processor
from edgevlm.demo.hf_compat import load_processor
from edgevlm.demo.questions import heldout_set
from edgevlm.demo.shapes import render


def test_loaded_processor_encodes_like_the_one_it_was_saved_from(tiny_checkpoint: Path) -> None:
    loaded, built = load_processor(tiny_checkpoint), build_processor()
    assert type(loaded).__name__ == "Glm4vProcessor"
    assert loaded.tokenizer.padding_side == "left"
    samples = heldout_set(4)
    messages = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}] for s in samples
    ]
    prompts = [loaded.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    assert prompts == [built.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    images = [render(s.scene) for s in samples]
    a = loaded(text=prompts, images=images, return_tensors="np", padding=True)
    b = built(text=prompts, images=images, return_tensors="np", padding=True)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert (a["attention_mask"][:, -1] == 1).all(), "padding goes on the left"
