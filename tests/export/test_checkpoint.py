"""Checking a checkpoint folder: every user mistake is one clear UserError, found before loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from edgevlm.errors import UserError
from edgevlm.export.checkpoint import inspect_checkpoint, load_model


@pytest.fixture
def checkpoint(demo_checkpoint: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the demo checkpoint."""
    return Path(shutil.copytree(demo_checkpoint, tmp_path / "ckpt"))


def test_a_good_checkpoint_passes(checkpoint: Path) -> None:
    info = inspect_checkpoint(checkpoint)
    assert info.config["model_type"] == "glm4v"
    assert [f.name for f in info.weight_files] == ["model.safetensors"]
    assert 0 < info.tensor_bytes < (checkpoint / "model.safetensors").stat().st_size
    assert len(info.config_sha256) == 64


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model folder not found"):
        inspect_checkpoint(tmp_path / "nope")


def test_missing_config(checkpoint: Path) -> None:
    (checkpoint / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        inspect_checkpoint(checkpoint)


def test_config_not_json(checkpoint: Path) -> None:
    (checkpoint / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        inspect_checkpoint(checkpoint)


def test_unsupported_architecture_lists_the_supported_ones(checkpoint: Path) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    config["model_type"] = "llama"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"unsupported architecture 'llama'.*supported: glm4v"):
        inspect_checkpoint(checkpoint)


def test_no_weights(checkpoint: Path) -> None:
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no \\*.safetensors"):
        inspect_checkpoint(checkpoint)


@pytest.mark.parametrize("damage", ["truncate", "garbage_header", "tiny"])
def test_corrupt_safetensors(checkpoint: Path, damage: str) -> None:
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    corrupt = {"truncate": data[: len(data) - 1000], "garbage_header": data[:8] + b"x" * 64 + data[72:],
               "tiny": data[:5]}[damage]
    path.write_bytes(corrupt)
    with pytest.raises(UserError, match="corrupt safetensors"):
        inspect_checkpoint(checkpoint)


def test_index_naming_a_missing_shard(checkpoint: Path) -> None:
    index = {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="lacks weight shards"):
        inspect_checkpoint(checkpoint)


def test_missing_tokenizer(checkpoint: Path) -> None:
    (checkpoint / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="lacks tokenizer.json"):
        inspect_checkpoint(checkpoint)


def test_loading_refuses_missing_weights(checkpoint: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(checkpoint / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, checkpoint / "model.safetensors", metadata={"format": "pt"})
    inspect_checkpoint(checkpoint)  # structurally fine ...
    with pytest.raises(UserError, match="lacks 1 weights \\(lm_head.weight\\)"):
        load_model(checkpoint, torch.float32)  # ... but a random lm_head would be a silent disaster
