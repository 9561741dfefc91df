"""PixelPacker is bit-identical to transformers' Glm4vImageProcessorPil: every image mode it
converts, resized or not, and processors configured other than GLM's defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers import Glm4vImageProcessorPil

from edgevlm.runtime.pixels import PixelPacker
from edgevlm.runtime.preprocess import Preprocessor


def noise(width: int, height: int, mode: str, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    data = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.fromarray(data[..., 0] if bands == 1 else data, mode)


def palette_with_transparency() -> Image.Image:
    image = noise(97, 61, "RGB", seed=3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 5
    return image


IMAGES = {
    "RGB, resized up": lambda: noise(60, 45, "RGB"),
    "RGB, already a multiple of 28": lambda: noise(280, 196, "RGB"),
    "RGB, odd size": lambda: noise(333, 101, "RGB"),
    "RGB, large, resized down": lambda: noise(1500, 1100, "RGB"),
    "RGBA (composited on white)": lambda: noise(150, 120, "RGBA"),
    "LA": lambda: noise(80, 130, "LA"),
    "L": lambda: noise(211, 77, "L"),
    "P with transparency": palette_with_transparency,
    "CMYK": lambda: noise(90, 90, "CMYK"),
}


def hf_pixels(proc, image: Image.Image) -> tuple[np.ndarray, tuple[int, int, int]]:
    out = proc(images=[image], return_tensors="np")
    return out["pixel_values"], tuple(int(v) for v in out["image_grid_thw"][0])


@pytest.fixture(scope="module")
def processor(checkpoint_dir: Path):
    return Glm4vImageProcessorPil.from_pretrained(checkpoint_dir)


@pytest.mark.parametrize("case", list(IMAGES))
def test_bit_identical_to_the_processor(case: str, processor) -> None:
    image = IMAGES[case]()
    expected, grid = hf_pixels(processor, image)
    got = PixelPacker(processor)([(image, grid)])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("settings", [
    {"do_normalize": False},
    {"do_rescale": False, "do_normalize": False},
    {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.8, 0.7]},
    {"image_mean": 0.5, "image_std": 0.25},
    {"rescale_factor": 1 / 127.5},
])
def test_follows_the_processors_own_settings(settings: dict, processor) -> None:
    configured = Glm4vImageProcessorPil(**{**processor.to_dict(), **settings})
    image = noise(123, 88, "RGB", seed=7)
    expected, grid = hf_pixels(configured, image)
    np.testing.assert_array_equal(PixelPacker(configured)([(image, grid)]), expected)


def test_preprocessor_concatenates_images_in_order(checkpoint_dir: Path, processor) -> None:
    pre = Preprocessor.from_dir(checkpoint_dir, image_token_id=0)
    images = [noise(100, 60, "RGB", seed=1), noise(40, 300, "L", seed=2)]
    specs = [pre.image_spec(image) for image in images]
    expected = processor(images=images, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(pre.pixels(specs), expected)
