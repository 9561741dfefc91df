"""The bundle's non-graph files: copied processor files, pixel limits, the embedding table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgevlm.demo.checkpoint import MAX_PIXELS, MIN_PIXELS, build_processor
from edgevlm.export.assets import copy_assets, pixel_limits, read_generation_config, write_embed_tokens


def test_copies_only_the_files_that_exist(demo_checkpoint: Path, tmp_path: Path) -> None:
    copied = copy_assets(demo_checkpoint, tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
            "generation_config.json"} <= set(copied)
    assert "model.safetensors" not in copied and "preprocessor_config.json" not in copied
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(copied)
    assert read_generation_config(tmp_path)["eos_token_id"]
    assert read_generation_config(tmp_path / "nowhere") == {}


def test_pixel_limits_from_the_image_processor() -> None:
    assert pixel_limits(build_processor().image_processor) == (MIN_PIXELS, MAX_PIXELS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_embed_table_keeps_its_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    weight = torch.randn(7, 3).to(dtype)
    entry = write_embed_tokens(weight, tmp_path)
    table = np.load(tmp_path / entry["file"])
    assert entry["dtype"] == entry["storage"] == str(table.dtype) and entry["shape"] == [7, 3]
    np.testing.assert_array_equal(table, weight.numpy())


def test_bf16_table_is_stored_as_raw_bits(tmp_path: Path) -> None:
    weight = torch.randn(5, 4).to(torch.bfloat16)
    entry = write_embed_tokens(weight, tmp_path)
    assert (entry["dtype"], entry["storage"]) == ("bfloat16", "uint16")
    bits = np.load(tmp_path / entry["file"])
    widened = (bits.astype(np.uint32) << 16).view(np.float32)  # the rule BUNDLE.md gives the runtime
    np.testing.assert_array_equal(widened, weight.float().numpy())
