"""The demo checkpoint: GLM-4.6V-Flash's structure scaled down, a folder that loads offline through
the Auto classes, and (the committed one) a model that answers held-out questions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgevlm.demo.checkpoint import (
    MAX_PIXELS,
    MIN_PIXELS,
    adopt_newline_token,
    build_processor,
    demo_config,
    demo_config_dict,
    new_model,
)
from edgevlm.demo.questions import heldout_set, is_correct
from edgevlm.demo.tokenizer import build_tokenizer


def test_config_keeps_glm_structure() -> None:
    text = demo_config_dict(272)["text_config"]
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    rope = text["rope_parameters"]
    assert text["num_key_value_heads"] < text["num_attention_heads"]  # grouped-query attention
    assert rope["partial_rotary_factor"] == 0.5
    # M-RoPE sections split the rotary half-dimension between (t, h, w).
    assert sum(rope["mrope_section"]) == int(head_dim * rope["partial_rotary_factor"]) // 2
    vision = demo_config_dict(272)["vision_config"]
    assert (vision["patch_size"], vision["temporal_patch_size"], vision["spatial_merge_size"]) == (14, 2, 2)
    assert vision["out_hidden_size"] == text["hidden_size"]


def test_adopting_the_newline_token_keeps_a_model_s_outputs() -> None:
    """A model trained when "\n" encoded as <unk> gives the same logits for a prompt encoded
    the old way once its "\n" rows copy <unk>'s; a second call changes nothing."""
    import torch

    model = new_model(seed=3).eval()
    vocab = build_tokenizer().get_vocab()
    newline, unknown = vocab["\n"], vocab["<unk>"]
    prompt = ["[gMASK]", "<sop>", "<|user|>", "\n", "<|assistant|>", "\n"]
    text = torch.tensor([[vocab[token] for token in prompt]])
    old = torch.where(text == newline, unknown, text)
    with torch.no_grad():
        before = model.model.language_model(input_ids=old).last_hidden_state
        assert adopt_newline_token(model) is True
        after = model.model.language_model(input_ids=text).last_hidden_state
        assert torch.equal(model.lm_head.weight[newline], model.lm_head.weight[unknown])
    assert torch.allclose(before, after)
    assert adopt_newline_token(model) is False


def test_config_token_ids_come_from_the_tokenizer() -> None:
    config = demo_config()
    vocab = build_tokenizer().get_vocab()
    assert config.image_token_id == vocab["<|image|>"]
    assert config.image_start_token_id == vocab["<|begin_of_image|>"]
    assert config.image_end_token_id == vocab["<|end_of_image|>"]
    assert vocab["<|endoftext|>"] in config.text_config.eos_token_id
    assert config.text_config.vocab_size >= len(vocab) and config.text_config.vocab_size % 16 == 0


@pytest.mark.parametrize("size", [(224, 112), (112, 448), (448, 448), (168, 280)])
def test_processor_expands_one_image_token_per_merged_patch(size: tuple[int, int]) -> None:
    processor = build_processor()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = processor(text=[prompt], images=[Image.new("RGB", size, "white")], return_tensors="np")
    width, height = size
    num_tokens = (width // 14) * (height // 14) // 4
    ids = encoded["input_ids"][0].tolist()
    assert ids.count(processor.image_token_id) == num_tokens
    assert encoded["image_grid_thw"].tolist() == [[1, height // 14, width // 14]]
    assert encoded["pixel_values"].shape == (4 * num_tokens, 3 * 2 * 14 * 14)
    assert MIN_PIXELS <= 2 * width * height <= MAX_PIXELS


def test_saved_checkpoint_loads_offline_through_the_auto_classes(tiny_checkpoint: Path) -> None:
    from transformers import AutoConfig, AutoModelForImageTextToText, Glm4vForConditionalGeneration

    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["model_type"] == "glm4v" and config["architectures"] == ["Glm4vForConditionalGeneration"]
    assert AutoConfig.from_pretrained(tiny_checkpoint).model_type == "glm4v"
    model = AutoModelForImageTextToText.from_pretrained(tiny_checkpoint)
    assert isinstance(model, Glm4vForConditionalGeneration)
    assert 3e6 < sum(p.numel() for p in model.parameters()) < 8e6
    weights = sum(f.stat().st_size for f in tiny_checkpoint.glob("*.safetensors"))
    assert weights < 25 * 2**20
    generation = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    assert generation["do_sample"] is False


# One fixed question per type and language; the trained model must get every one right.
FIXED = {
    ("colour", "en"): 0,
    ("shape", "en"): 1,
    ("count", "en"): 2,
    ("box", "en"): 3,
    ("colour", "zh"): 5,
    ("shape", "zh"): 6,
    ("count", "zh"): 7,
    ("box", "zh"): 8,
}


def test_demo_model_answers_fixed_heldout_questions(demo_model_dir: Path) -> None:
    _assert_answers_right(demo_model_dir, [heldout_set(600)[i] for i in FIXED.values()])


def test_demo_model_reproduces_its_reported_right_answers(demo_model_dir: Path, known_correct) -> None:
    """Loaded offline through the Auto classes, the model answers EN and ZH questions (a box
    included) that its committed eval report marks right."""
    picks = [("colour", "en"), ("count", "zh"), ("shape", "zh"), ("box", "en"), ("box", "zh")]
    _assert_answers_right(demo_model_dir, [known_correct(qtype, lang) for qtype, lang in picks])


def _assert_answers_right(demo_model_dir: Path, samples: list) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    from edgevlm.demo.hf_compat import load_processor
    from edgevlm.demo.shapes import render

    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    processor = load_processor(demo_model_dir)
    end = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    wrong = []
    for sample in samples:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[prompt], images=[render(sample.scene)], return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
        new = output[0, inputs["input_ids"].shape[1] :].tolist()
        answer = processor.tokenizer.decode(new[: new.index(end)] if end in new else new)
        if not is_correct(sample, answer):
            wrong.append(f"{sample.question!r}: got {answer!r}, expected {sample.answer!r}")
    assert not wrong, "\n".join(wrong)


def test_demo_model_is_the_glm4v_architecture(demo_model_dir: Path) -> None:
    config = json.loads((demo_model_dir / "config.json").read_text())
    assert config["model_type"] == "glm4v"
    assert np.isclose(config["text_config"]["rope_parameters"]["partial_rotary_factor"], 0.5)
