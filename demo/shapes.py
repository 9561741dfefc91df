"""Procedural scenes of coloured shapes: the demo model's world, deterministic by seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (235, 235, 235),
    (245, 240, 225),
    (225, 235, 245),
    (200, 200, 200),
)
# Side lengths are multiples of 28 (patch 14 x merge 2) so the processor never resizes them.
SIDE_STEP = 28
MIN_SIDE, MAX_SIDE = 112, 448
MAX_SHAPES = 4


@dataclass(frozen=True, slots=True)
class Shape:
    kind: str
    colour: str
    # Pixel box, inclusive-exclusive: x1 <= x < x2.
    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def cx(self) -> float:
        return (self.x1 + self.x2) / 2


@dataclass(frozen=True, slots=True)
class Scene:
    width: int
    height: int
    background: tuple[int, int, int]
    noise: float
    shapes: tuple[Shape, ...]
    seed: int

    def box_1000(self, shape: Shape) -> tuple[int, int, int, int]:
        """The shape's box in GLM's grounding convention: 0-1000 normalised to the image size."""
        return (
            round(shape.x1 * 1000 / self.width),
            round(shape.y1 * 1000 / self.height),
            round(shape.x2 * 1000 / self.width),
            round(shape.y2 * 1000 / self.height),
        )


def _pick_size(rng: random.Random) -> tuple[int, int]:
    # Aspect ratio between 1:2 and 2:1.
    while True:
        w = rng.randrange(MIN_SIDE, MAX_SIDE + 1, SIDE_STEP)
        h = rng.randrange(MIN_SIDE, MAX_SIDE + 1, SIDE_STEP)
        if 0.5 <= w / h <= 2.0:
            return w, h


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def random_scene(seed: int, max_shapes: int = MAX_SHAPES, min_shapes: int = 1) -> Scene:
    """A scene with 1-4 non-overlapping shapes; the same seed always gives the same scene."""
    rng = random.Random(seed)
    width, height = _pick_size(rng)
    short = min(width, height)
    wanted = rng.randint(min_shapes, max_shapes)
    boxes: list[tuple[int, int, int, int]] = []
    shapes: list[Shape] = []
    for _ in range(200):
        if len(shapes) == wanted:
            break
        # Shapes span at least ~1.5 merged tokens (42 px) so their outline is visible to the encoder.
        side = rng.randint(max(42, short // 5), max(48, int(short * 0.42)))
        x1 = rng.randint(2, width - side - 2)
        y1 = rng.randint(2, height - side - 2)
        box = (x1, y1, x1 + side, y1 + side)
        if any(_overlaps(box, other, 6) for other in boxes):
            continue
        boxes.append(box)
        shapes.append(Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), *box))
    background = rng.choice(BACKGROUNDS)
    noise = rng.choice((0.0, 0.0, 6.0, 12.0))
    return Scene(width, height, background, noise, tuple(shapes), seed)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, fill: int | tuple[int, int, int] | None = None) -> None:
    """Draw one shape in its colour, or in `fill` (a mask index)."""
    colour = COLOURS[shape.colour] if fill is None else fill
    box = (shape.x1, shape.y1, shape.x2 - 1, shape.y2 - 1)
    if shape.kind == "circle":
        draw.ellipse(box, fill=colour)
    elif shape.kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(shape.x1, shape.y2 - 1), (shape.x2 - 1, shape.y2 - 1), (shape.cx, shape.y1)], fill=colour)


def render(scene: Scene) -> Image.Image:
    """Draw the scene as an RGB PIL image."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape)
    if scene.noise > 0:
        rng = np.random.default_rng(scene.seed)
        pixels = np.asarray(image, dtype=np.float32)
        pixels += rng.normal(0.0, scene.noise, size=pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image


def shape_masks(scene: Scene) -> np.ndarray:
    """Index of the shape covering each pixel (0 = background, i+1 = scene.shapes[i]). [H, W] int8."""
    image = Image.new("L", (scene.width, scene.height), 0)
    draw = ImageDraw.Draw(image)
    for index, shape in enumerate(scene.shapes):
        _draw_shape(draw, shape, fill=index + 1)
    return np.asarray(image, dtype=np.int8)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


__all__ = ["COLOURS", "SHAPES", "Scene", "Shape", "iou", "random_scene", "render", "shape_masks"]
