"""Preprocessing parity with HF: tokens, pixels, grids and M-RoPE positions (get_rope_index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgevlm.demo.questions import heldout_set
from edgevlm.demo.shapes import render
from edgevlm.runtime.preprocess import Preprocessor
from edgevlm.runtime.types import ImagePart, Message, RequestRejected, TextPart


@pytest.fixture(scope="module")
def preprocessor(checkpoint_dir: Path, hf_model) -> Preprocessor:
    return Preprocessor.from_dir(checkpoint_dir, hf_model.config.image_token_id)


def hf_chat(messages: tuple[Message, ...]) -> list[dict]:
    out = []
    for m in messages:
        content = [{"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text}
                   for p in m.parts]
        out.append({"role": m.role, "content": content})
    return out


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return Image.fromarray(np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8))


CASES = {
    "one image": lambda: (
        Message("user", (ImagePart(render(heldout_set(1)[0].scene)), TextPart("Describe the image."))),
    ),
    "odd sizes, two images, zh": lambda: (
        Message("user", (ImagePart(gradient(333, 100)), TextPart("图中有几个图形?"), ImagePart(gradient(20, 700)))),
    ),
    "system + multi-turn": lambda: (
        Message("system", (TextPart("You are terse."),)),
        Message("user", (ImagePart(gradient(448, 448)), TextPart("What colour is the circle?"))),
        Message("assistant", (TextPart("red"),)),
        Message("user", (TextPart("And the square?"),)),
    ),
    "large image is resized down": lambda: (Message("user", (ImagePart(gradient(1600, 900)), TextPart("hi"))),),
    "text only": lambda: (Message("user", (TextPart("hello there"),)),),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_hf_processor_and_get_rope_index(case: str, preprocessor: Preprocessor, hf_processor, hf_model) -> None:
    messages = CASES[case]()
    images = [p.image for m in messages for p in m.parts if isinstance(p, ImagePart)]
    text = hf_processor.apply_chat_template(hf_chat(messages), add_generation_prompt=True, tokenize=False)
    assert preprocessor.render(messages) == text
    hf = hf_processor(text=[text], images=images or None, return_tensors="pt")
    prompt = preprocessor(messages)
    np.testing.assert_array_equal(prompt.input_ids, hf["input_ids"][0].numpy())
    grid = hf.get("image_grid_thw")
    with torch.no_grad():
        positions, delta = hf_model.model.get_rope_index(
            hf["input_ids"], hf["mm_token_type_ids"], image_grid_thw=grid, attention_mask=hf["attention_mask"]
        )
    np.testing.assert_array_equal(prompt.positions, positions[:, 0].numpy())
    assert prompt.rope_delta == int(delta[0, 0])
    if images:
        assert [s.grid_thw for s in prompt.images] == [tuple(g) for g in grid.tolist()]
        np.testing.assert_array_equal(preprocessor.pixels(list(prompt.images)), hf["pixel_values"].numpy())
        placeholders = np.flatnonzero(prompt.input_ids == preprocessor.image_token_id)
        assert prompt.image_token_index.tolist() == placeholders.tolist()


def test_placeholder_text_is_rejected(preprocessor: Preprocessor) -> None:
    with pytest.raises(RequestRejected, match="placeholder"):
        preprocessor((Message("user", (TextPart("sneaky <|image|> token"),)),))
    with pytest.raises(RequestRejected, match="empty"):
        preprocessor(())


def test_extreme_aspect_ratio_is_rejected(preprocessor: Preprocessor) -> None:
    with pytest.raises(RequestRejected, match="aspect ratio"):
        preprocessor((Message("user", (ImagePart(Image.new("RGB", (6000, 20))),)),))
