"""Questions and answers about a scene, in English and Chinese, right by construction."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from edgevlm.demo.shapes import COLOURS, SHAPES, Scene, Shape, iou, random_scene

QUESTION_TYPES: tuple[str, ...] = ("colour", "shape", "count", "box", "describe")
LANGUAGES: tuple[str, ...] = ("en", "zh")
BOX_OPEN, BOX_CLOSE = "<|begin_of_box|>", "<|end_of_box|>"

COLOUR_ZH = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色"}
SHAPE_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
# Short names a Chinese speaker uses when counting ("图中有几个圆?").
SHAPE_ZH_SHORT = {"circle": "圆", "square": "正方形", "triangle": "三角形"}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}

EN_TEMPLATES = {
    "colour": ("What colour is the {shape}?", "What color is the {shape}?", "Which colour is the {shape}?"),
    "shape": ("What shape is the {colour} one?", "Which shape is {colour}?", "What is the {colour} shape?"),
    "count_all": ("How many shapes are there?", "How many shapes are in the image?", "Count the shapes."),
    "count_shape": ("How many {plural} are there?", "How many {plural} are in the image?"),
    "count_colour": ("How many {colour} shapes are there?", "How many shapes are {colour}?"),
    "box": ("Where is the {colour} {shape}?", "Find the {colour} {shape}.", "Locate the {colour} {shape}."),
    "describe": ("Describe the image.", "What is in the image?", "Describe this picture in one sentence."),
}
ZH_TEMPLATES = {
    "colour": ("{shape}是什么颜色?", "图中的{shape}是什么颜色？", "{shape}是什么颜色的?"),
    "shape": ("{colour}的是什么形状?", "{colour}的图形是什么形状？", "哪个形状是{colour}的?"),
    "count_all": ("图中有几个图形?", "图中一共有几个图形？", "数一数图中的图形。"),
    "count_shape": ("图中有几个{short}?", "图中有多少个{short}？"),
    "count_colour": ("图中有几个{colour}的图形?", "{colour}的图形有几个？"),
    "box": ("{colour}{shape}在哪里?", "找出{colour}的{shape}。", "{colour}的{shape}在哪里？"),
    "describe": ("描述这张图片。", "图中有什么?", "用一句话描述这张图片。"),
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One question about one scene, with the reference answer."""

    seed: int
    qtype: str
    lang: str
    question: str
    answer: str
    scene: Scene
    target: Shape | None = None


def _colour_name(colour: str, lang: str) -> str:
    return colour if lang == "en" else COLOUR_ZH[colour]


def _shape_name(kind: str, lang: str) -> str:
    return kind if lang == "en" else SHAPE_ZH[kind]


def _unique(shapes: tuple[Shape, ...], key: str) -> list[Shape]:
    counts = Counter(getattr(s, key) for s in shapes)
    return [s for s in shapes if counts[getattr(s, key)] == 1]


def format_box(box: tuple[int, int, int, int]) -> str:
    return f"{BOX_OPEN}[{box[0]},{box[1]},{box[2]},{box[3]}]{BOX_CLOSE}"


def describe_item(shape: Shape, lang: str) -> str:
    """How a description names one shape: "a red circle" / "红色圆形"."""
    return f"a {shape.colour} {shape.kind}" if lang == "en" else COLOUR_ZH[shape.colour] + SHAPE_ZH[shape.kind]


def left_to_right(shapes: Sequence[Shape]) -> list[int]:
    """Indices of the shapes in the order a description names them: by centre x, then top."""
    return sorted(range(len(shapes)), key=lambda i: (shapes[i].cx, shapes[i].y1))


def describe(scene: Scene, lang: str) -> str:
    """One sentence listing every shape from left to right."""
    ordered = [scene.shapes[i] for i in left_to_right(scene.shapes)]
    n = len(ordered)
    items = [describe_item(s, lang) for s in ordered]
    if lang == "en":
        listed = items[0] if n == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        noun = "shape" if n == 1 else "shapes"
        verb = "is" if n == 1 else "are"
        return f"There {verb} {n} {noun}: {listed}."
    listed = items[0] if n == 1 else "、".join(items[:-1]) + "和" + items[-1]
    return f"图中有{n}个图形：{listed}。"


def ask(rng: random.Random, scene: Scene, qtype: str, lang: str) -> tuple[str, str, Shape | None] | None:
    templates = EN_TEMPLATES if lang == "en" else ZH_TEMPLATES
    if qtype == "colour":
        pool = _unique(scene.shapes, "kind")
        if not pool:
            return None
        s = rng.choice(pool)
        return rng.choice(templates["colour"]).format(shape=_shape_name(s.kind, lang)), _colour_name(s.colour, lang), s
    if qtype == "shape":
        pool = _unique(scene.shapes, "colour")
        if not pool:
            return None
        s = rng.choice(pool)
        q = rng.choice(templates["shape"]).format(colour=_colour_name(s.colour, lang))
        return q, _shape_name(s.kind, lang), s
    if qtype == "count":
        return _ask_count(rng, scene, lang, templates)
    if qtype == "box":
        pairs = Counter((s.colour, s.kind) for s in scene.shapes)
        pool = [s for s in scene.shapes if pairs[(s.colour, s.kind)] == 1]
        if not pool:
            return None
        s = rng.choice(pool)
        q = rng.choice(templates["box"]).format(colour=_colour_name(s.colour, lang), shape=_shape_name(s.kind, lang))
        return q, format_box(scene.box_1000(s)), s
    return rng.choice(templates["describe"]), describe(scene, lang), None


def _ask_count(rng: random.Random, scene: Scene, lang: str, templates: dict) -> tuple[str, str, None]:
    mode = rng.choice(("all", "shape", "colour"))
    if mode == "all":
        return rng.choice(templates["count_all"]), str(len(scene.shapes)), None
    if mode == "shape":
        kind = rng.choice(SHAPES)
        n = sum(s.kind == kind for s in scene.shapes)
        q = rng.choice(templates["count_shape"]).format(plural=PLURAL[kind], short=SHAPE_ZH_SHORT[kind])
        return q, str(n), None
    colour = rng.choice([s.colour for s in scene.shapes] + [rng.choice(list(COLOURS))])
    n = sum(s.colour == colour for s in scene.shapes)
    return rng.choice(templates["count_colour"]).format(colour=_colour_name(colour, lang)), str(n), None


def make_sample(seed: int, qtype: str, lang: str) -> Sample:
    """A valid question of this type and language; scenes are redrawn from derived seeds until one fits."""
    if qtype not in QUESTION_TYPES:
        raise ValueError(f"qtype must be one of {QUESTION_TYPES}, got {qtype!r}")
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    for attempt in range(100):
        scene_seed = seed * 101 + attempt
        scene = random_scene(scene_seed)
        asked = ask(random.Random(scene_seed ^ 0x5EED), scene, qtype, lang)
        if asked is not None:
            question, answer, target = asked
            return Sample(seed, qtype, lang, question, answer, scene, target)
    raise RuntimeError(f"no valid {qtype} question for seed {seed}")


def sample_for_index(index: int, offset: int = 0) -> Sample:
    """The index-th sample of a stream balanced over types and languages."""
    qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
    lang = LANGUAGES[(index // len(QUESTION_TYPES)) % len(LANGUAGES)]
    return make_sample(offset + index, qtype, lang)


# Train seeds count up from 0; the held-out set lives far above them, so the two never meet.
HELDOUT_OFFSET = 50_000_000


def heldout_set(size: int = 600) -> list[Sample]:
    """The fixed evaluation set: equal shares of every type and language."""
    return [sample_for_index(i, HELDOUT_OFFSET) for i in range(size)]


# --- scoring ---------------------------------------------------------------------------------
_BOX_RE = re.compile(r"\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")


def parse_box(text: str) -> tuple[int, int, int, int] | None:
    match = _BOX_RE.search(text)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def _normalise(text: str) -> str:
    return re.sub(r"[\s.。!！?？]+", "", text.strip().lower())


def _mentioned(text: str, lang: str) -> Counter:
    """(colour, shape) pairs a description mentions, in any order."""
    found: Counter = Counter()
    for colour in COLOURS:
        for kind in SHAPES:
            phrase = f"{colour} {kind}" if lang == "en" else COLOUR_ZH[colour] + SHAPE_ZH[kind]
            found[(colour, kind)] += text.lower().count(phrase)
    return +found


def is_correct(sample: Sample, prediction: str) -> bool:
    """Exact match for words and counts, IoU >= 0.5 for boxes, the right multiset for descriptions."""
    if sample.qtype == "box":
        predicted, truth = parse_box(prediction), parse_box(sample.answer)
        return predicted is not None and truth is not None and iou(predicted, truth) >= 0.5
    if sample.qtype == "describe":
        drawn = Counter((s.colour, s.kind) for s in sample.scene.shapes)
        count = re.search(r"\d+", prediction)
        right_count = count is not None and int(count.group()) == len(sample.scene.shapes)
        return right_count and _mentioned(prediction, sample.lang) == drawn
    return _normalise(prediction) == _normalise(sample.answer)
