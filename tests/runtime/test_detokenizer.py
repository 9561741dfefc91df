"""Incremental detokenization: whole UTF-8 characters only, stop strings cut and never leaked."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from edgevlm.runtime.detokenizer import REPLACEMENT, Detokenizer


@pytest.fixture(scope="module")
def byte_tokenizer() -> Tokenizer:
    """Byte-level BPE without merges: every UTF-8 byte is its own token (a Chinese character is 3)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def stream(tokenizer: Tokenizer, text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], Detokenizer]:
    ids = tokenizer.encode(text).ids
    detok = Detokenizer(tokenizer.decode, stop)
    pieces = []
    for token in ids:
        pieces.append(detok.add(token))
        if detok.stopped:
            break
    pieces.append(detok.finish())
    return pieces, detok


@pytest.mark.parametrize("text", ["图中有3个图形：红色圆形、蓝色正方形和黄色三角形。", "mixed 中文 and English ✓ 🙂"])
def test_never_emits_broken_characters(byte_tokenizer: Tokenizer, text: str) -> None:
    pieces, detok = stream(byte_tokenizer, text)
    assert len(byte_tokenizer.encode(text).ids) > len(text)  # characters do span several tokens
    assert all(REPLACEMENT not in p for p in pieces)
    assert "".join(pieces) == text == detok.text


def test_stop_string_across_tokens_is_cut_and_not_leaked(byte_tokenizer: Tokenizer) -> None:
    pieces, detok = stream(byte_tokenizer, "红色圆形和蓝色方形", stop=("和蓝",))
    assert detok.stopped
    assert "".join(pieces) == "红色圆形"
    assert all("和" not in p for p in pieces)


def test_earliest_of_several_stops_wins(byte_tokenizer: Tokenizer) -> None:
    pieces, _ = stream(byte_tokenizer, "alpha beta gamma", stop=("gamma", "beta"))
    assert "".join(pieces) == "alpha "


def test_held_back_prefix_is_released_when_the_stop_never_completes(byte_tokenizer: Tokenizer) -> None:
    ids = byte_tokenizer.encode("answer: 4 END").ids
    detok = Detokenizer(byte_tokenizer.decode, ("ENDING",))
    emitted = "".join(detok.add(t) for t in ids)
    assert emitted == "answer: 4 "  # "END" could still become "ENDING"
    assert detok.finish() == "END"
    assert not detok.stopped


def test_incomplete_character_at_the_end_matches_one_shot_decode(byte_tokenizer: Tokenizer) -> None:
    ids = byte_tokenizer.encode("好的").ids[:-1]  # cut inside the second character
    detok = Detokenizer(byte_tokenizer.decode)
    text = "".join(detok.add(t) for t in ids) + detok.finish()
    assert text == byte_tokenizer.decode(ids) == "好" + REPLACEMENT


def test_word_level_demo_tokenizer_spaces() -> None:
    from edgevlm.demo.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    text = "there are 2 shapes: a red circle and a blue square."
    pieces, _ = stream(tokenizer, text)
    assert "".join(pieces) == tokenizer.decode(tokenizer.encode(text).ids)
