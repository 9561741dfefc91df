"""Scenes: deterministic by seed, sizes in range, and the drawn pixels match the scene data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgevlm.demo.shapes import (
    COLOURS,
    MAX_SHAPES,
    MAX_SIDE,
    MIN_SIDE,
    SIDE_STEP,
    Scene,
    iou,
    random_scene,
    render,
    shape_masks,
)

SEEDS = range(300)


def test_same_seed_gives_identical_scene_and_image_bytes() -> None:
    for seed in (0, 7, 123_456):
        assert random_scene(seed) == random_scene(seed)
        assert render(random_scene(seed)).tobytes() == render(random_scene(seed)).tobytes()


def test_different_seeds_give_different_images() -> None:
    images = {render(random_scene(seed)).tobytes() for seed in range(20)}
    assert len(images) == 20


@pytest.mark.parametrize("seed", SEEDS)
def test_image_size_and_aspect_ratio_in_range(seed: int) -> None:
    scene = random_scene(seed)
    for side in (scene.width, scene.height):
        assert MIN_SIDE <= side <= MAX_SIDE
        assert side % SIDE_STEP == 0
    assert 0.5 <= scene.width / scene.height <= 2.0
    assert render(scene).size == (scene.width, scene.height)


@pytest.mark.parametrize("seed", SEEDS)
def test_shapes_inside_the_image_and_apart(seed: int) -> None:
    scene = random_scene(seed)
    assert 1 <= len(scene.shapes) <= MAX_SHAPES
    for shape in scene.shapes:
        assert 0 <= shape.x1 < shape.x2 <= scene.width
        assert 0 <= shape.y1 < shape.y2 <= scene.height
        assert shape.x2 - shape.x1 == shape.y2 - shape.y1 >= 42
    boxes = [(s.x1, s.y1, s.x2, s.y2) for s in scene.shapes]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert iou(a, b) == 0.0


def _clean(seed: int) -> Scene:
    """The scene for `seed` with the pixel noise switched off, so colours can be compared exactly."""
    scene = random_scene(seed)
    return Scene(scene.width, scene.height, scene.background, 0.0, scene.shapes, scene.seed)


@pytest.mark.parametrize("seed", range(60))
def test_masks_match_the_drawn_pixels(seed: int) -> None:
    scene = _clean(seed)
    pixels = np.asarray(render(scene))
    masks = shape_masks(scene)
    assert masks.shape == (scene.height, scene.width)
    assert (pixels[masks == 0] == scene.background).all()
    for index, shape in enumerate(scene.shapes):
        ys, xs = np.nonzero(masks == index + 1)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (shape.x1, shape.y1, shape.x2, shape.y2)
        assert (pixels[masks == index + 1] == COLOURS[shape.colour]).all()


@pytest.mark.parametrize("seed", range(60))
def test_each_kind_fills_its_box_as_its_geometry_says(seed: int) -> None:
    scene = random_scene(seed)
    masks = shape_masks(scene)
    expected = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}
    for index, shape in enumerate(scene.shapes):
        fill = (masks == index + 1).sum() / ((shape.x2 - shape.x1) * (shape.y2 - shape.y1))
        assert fill == pytest.approx(expected[shape.kind], abs=0.06)


@pytest.mark.parametrize("seed", range(100))
def test_box_1000_is_the_pixel_box_normalised(seed: int) -> None:
    scene = random_scene(seed)
    for shape in scene.shapes:
        box = scene.box_1000(shape)
        assert all(0 <= v <= 1000 for v in box)
        back = (box[0] * scene.width / 1000, box[1] * scene.height / 1000)
        back += (box[2] * scene.width / 1000, box[3] * scene.height / 1000)
        assert back == pytest.approx((shape.x1, shape.y1, shape.x2, shape.y2), abs=0.5)


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
