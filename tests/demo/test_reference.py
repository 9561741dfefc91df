"""The PyTorch reference backend: input checks, and batched answers equal to one-at-a-time answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevlm.demo.questions import heldout_set
from edgevlm.demo.reference import ReferenceBackend, check_checkpoint
from edgevlm.errors import UserError


def test_check_checkpoint_rejects_what_is_not_a_glm4v_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        check_checkpoint(tmp_path / "missing")
    with pytest.raises(UserError, match="no config.json"):
        check_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable config.json"):
        check_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="not a glm4v checkpoint"):
        check_checkpoint(tmp_path)


def test_check_checkpoint_accepts_a_saved_checkpoint(tiny_checkpoint: Path) -> None:
    check_checkpoint(tiny_checkpoint)


def test_a_glm4v_config_without_weights_is_a_user_error(tmp_path: Path, tiny_checkpoint: Path) -> None:
    (tmp_path / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    with pytest.raises(UserError, match="cannot load checkpoint"):
        ReferenceBackend(tmp_path)


@pytest.fixture(scope="module")
def backend(tiny_checkpoint: Path) -> ReferenceBackend:
    return ReferenceBackend(tiny_checkpoint, max_new_tokens=12)


def test_batched_answers_equal_one_at_a_time_answers(backend: ReferenceBackend) -> None:
    # Images of different sizes give prompts of different lengths: the batch is left-padded.
    samples = heldout_set(6)
    assert len({s.scene.width * s.scene.height for s in samples}) > 1
    batched = backend(samples)
    assert len(batched) == len(samples) and all(isinstance(a, str) for a in batched)
    assert batched == [backend([s])[0] for s in samples]


def test_decode_stops_at_the_first_end_token(backend: ReferenceBackend) -> None:
    tokenizer = backend.processor.tokenizer
    red, end, user = tokenizer.convert_tokens_to_ids(["red", "<|endoftext|>", "<|user|>"])
    assert backend.decode([red, end, red, red]) == "red"
    assert backend.decode([red, user, red]) == "red"
    assert backend.decode([red, red]) == "redred"
    box = tokenizer("<|begin_of_box|>[1,2,3,4]<|end_of_box|>", add_special_tokens=False)["input_ids"]
    assert backend.decode(box + [end]) == "<|begin_of_box|>[1,2,3,4]<|end_of_box|>"
