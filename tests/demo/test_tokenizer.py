"""The demo tokenizer: exact round trips for what the model answers, GLM's special tokens and
GLM's chat format."""

from __future__ import annotations

import unicodedata

import pytest

from edgevlm.demo.questions import heldout_set, sample_for_index
from edgevlm.demo.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer

GLM_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|video|>",
    "<|end_of_video|>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _round_trip(tokenizer, text: str) -> str:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_short_answers_round_trip_exactly(tokenizer) -> None:
    samples = heldout_set(600) + [sample_for_index(i) for i in range(600)]
    answers = {s.answer for s in samples if s.qtype in ("colour", "shape", "count", "box")}
    assert any("box" in a for a in answers) and any("色" in a for a in answers)
    for answer in answers:
        assert _round_trip(tokenizer, answer) == answer


@pytest.mark.parametrize(
    "text",
    [
        "red",
        "triangle",
        "3",
        "what colour is the circle?",
        "how many triangles are there?",
        "红色",
        "三角形",
        "图中有几个圆?",
        "<|begin_of_box|>[0,5,999,1000]<|end_of_box|>",
        "<|begin_of_box|>[12,345,678,901]<|end_of_box|>",
    ],
)
def test_en_zh_and_box_strings_round_trip_exactly(tokenizer, text: str) -> None:
    assert _round_trip(tokenizer, text) == text


def test_text_is_normalised_to_lowercase_nfkc(tokenizer) -> None:
    # Capitals and full-width punctuation are folded before lookup, so descriptions and questions
    # come back in their normalised form (the scorer compares normalised text too).
    for sample in heldout_set(60):
        for text in (sample.question, sample.answer):
            assert _round_trip(tokenizer, text) == unicodedata.normalize("NFKC", text).lower()


def test_digits_are_single_tokens(tokenizer) -> None:
    tokens = tokenizer.encode("[120,345,678,999]", add_special_tokens=False).tokens
    assert tokens == ["[", "1", "2", "0", ",", "3", "4", "5", ",", "6", "7", "8", ",", "9", "9", "9", "]"]


def test_special_tokens_have_glm_names_and_one_id_each(tokenizer) -> None:
    vocab = tokenizer.get_vocab()
    assert set(GLM_SPECIAL_TOKENS) <= set(SPECIAL_TOKENS)
    for token in GLM_SPECIAL_TOKENS:
        assert tokenizer.encode(token, add_special_tokens=False).ids == [vocab[token]]
        assert tokenizer.decode([vocab[token]], skip_special_tokens=False) == token
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    assert set(GLM_SPECIAL_TOKENS) <= special


@pytest.fixture(scope="module")
def hf_tokenizer():
    from edgevlm.demo.checkpoint import build_processor

    return build_processor().tokenizer


def _render(hf_tokenizer, messages, add_generation_prompt: bool = True) -> str:
    return hf_tokenizer.apply_chat_template(
        messages, chat_template=CHAT_TEMPLATE, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def test_chat_template_renders_an_image_question_in_glm_format(hf_tokenizer) -> None:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    assert _render(hf_tokenizer, messages) == (
        "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>What colour is it?<|assistant|>\n"
    )


def test_chat_template_system_and_developer_roles(hf_tokenizer) -> None:
    for role in ("system", "developer"):
        messages = [{"role": role, "content": "Answer briefly."}, {"role": "user", "content": "Hi"}]
        assert _render(hf_tokenizer, messages) == "[gMASK]<sop><|system|>\nAnswer briefly.<|user|>\nHi<|assistant|>\n"


def test_chat_template_multi_turn(hf_tokenizer) -> None:
    messages = [
        {"role": "user", "content": [{"type": "image_url"}, {"type": "text", "text": "Describe the image."}]},
        {"role": "assistant", "content": "There is 1 shape: a red circle."},
        {"role": "user", "content": [{"type": "text", "text": "Where is the red circle?"}]},
    ]
    assert _render(hf_tokenizer, messages) == (
        "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>Describe the image."
        "<|assistant|>\nThere is 1 shape: a red circle.<|user|>\nWhere is the red circle?<|assistant|>\n"
    )
    assert _render(hf_tokenizer, messages[:2], add_generation_prompt=False).endswith("a red circle.")


def test_newline_after_role_tags_round_trips(tokenizer) -> None:
    text = "<|user|>\nhow many shapes?<|assistant|>\n"
    assert _round_trip(tokenizer, text) == text
