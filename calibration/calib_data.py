"""Calibration samples: (image, prompt) pairs from the user's folder and prompt file, or by default
from the demo's synthetic scenes.

The demo samples come from their own seed range, disjoint from the held-out set the accuracy gate
scores (calibrating on the test questions would flatter the gate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from edgevlm.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
DEFAULT_PROMPT = "Describe the image."
# Train seeds count up from 0 and the held-out set starts at 50,000,000 (edgevlm.demo.questions).
CALIBRATION_OFFSET = 70_000_000


@dataclass(frozen=True, slots=True)
class CalibrationItem:
    image: Image.Image
    prompt: str


@dataclass(frozen=True, slots=True)
class CalibrationSet:
    items: tuple[CalibrationItem, ...]
    source: str  # "demo" or the images folder, for the manifest


def demo_set(count: int) -> CalibrationSet:
    """`count` demo questions over their rendered scenes, balanced over types and languages."""
    from edgevlm.demo.questions import sample_for_index
    from edgevlm.demo.shapes import render

    samples = [sample_for_index(i, CALIBRATION_OFFSET) for i in range(count)]
    return CalibrationSet(tuple(CalibrationItem(render(s.scene), s.question) for s in samples), "demo")


def user_set(images_dir: Path, prompts_file: Path | None, count: int) -> CalibrationSet:
    """Up to `count` images of the folder (name order), each with the next prompt (prompts cycle)."""
    paths = image_files(images_dir)[:count]
    prompts = read_prompts(prompts_file) if prompts_file is not None else [DEFAULT_PROMPT]
    items = tuple(CalibrationItem(load_image(p), prompts[i % len(prompts)]) for i, p in enumerate(paths))
    return CalibrationSet(items, str(images_dir))


def image_files(images_dir: Path) -> list[Path]:
    if not images_dir.is_dir():
        raise UserError(f"calibration images folder not found: {images_dir}")
    paths = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"no images in {images_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def load_image(path: Path) -> Image.Image:
    """The decoded image in RGB (decoded now, so a broken file fails before calibration starts)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"cannot read calibration image {path}: {exc}") from None


def read_prompts(path: Path) -> list[str]:
    """Prompts, one per line, or JSONL with a "prompt" field per line; blank lines are skipped."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read calibration prompts {path}: {exc}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"no prompts in {path}")
    if not lines[0].startswith("{"):
        return lines
    return [_jsonl_prompt(path, number, line) for number, line in enumerate(lines, 1)]


def _jsonl_prompt(path: Path, number: int, line: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {number} is not JSON ({exc.msg})") from None
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError(f'{path}: line {number} has no "prompt" string')
    return prompt.strip()


def calibration_set(images_dir: Path | None, prompts_file: Path | None, count: int) -> CalibrationSet:
    if images_dir is None:
        return demo_set(count)
    return user_set(images_dir, prompts_file, count)
