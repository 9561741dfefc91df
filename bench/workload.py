"""The benchmark's workload, identical for HF transformers and the runtime: one 448x448 image and a
question of exactly `question_tokens` tokens, answers forced to `decode_tokens` tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

IMAGE_SIDE = 448
# Words the demo tokenizer knows (so its 20-token prefix round-trips); any GLM tokenizer cuts it too.
BASE_QUESTION = (
    "Describe the image. How many shapes are there? What colour is the circle? Where is the red square? "
    "What shape is the blue one? Count the shapes. Which shape is green? Where is the yellow triangle?"
)


@dataclass(frozen=True, slots=True)
class Workload:
    question_tokens: int = 20
    decode_tokens: int = 64
    concurrency: tuple[int, ...] = (1, 4, 16)
    repeats: int = 3

    def __post_init__(self) -> None:
        for name in ("question_tokens", "decode_tokens", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decode_tokens < 2:
            raise ValueError(f"decode_tokens must be >= 2 (decode speed needs two tokens), got {self.decode_tokens}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency must be positive integers, got {self.concurrency}")

    def as_dict(self) -> dict:
        return asdict(self)


def bench_image(seed: int) -> Image.Image:
    """A 448x448 picture of a few shapes; the seed moves them, so images differ by content."""
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (240, 240, 235))
    draw = ImageDraw.Draw(image)
    colours = [(220, 30, 30), (30, 170, 50), (30, 60, 220), (235, 200, 20)]
    for i, colour in enumerate(colours):
        x = 20 + (seed * 37 + i * 101) % 300
        y = 20 + (seed * 53 + i * 89) % 300
        shape = draw.ellipse if i % 2 else draw.rectangle
        shape((x, y, x + 90, y + 90), fill=colour)
    return image


def question_text(tokenizer, count: int) -> str:
    """The first `count` tokens of the base question, as text (re-tokenizes to `count` tokens)."""
    ids = tokenizer(BASE_QUESTION, add_special_tokens=False)["input_ids"]
    if len(ids) < count:
        raise ValueError(f"the base question has only {len(ids)} tokens with this tokenizer, {count} asked")
    text = tokenizer.decode(ids[:count], skip_special_tokens=False)
    if len(tokenizer(text, add_special_tokens=False)["input_ids"]) != count:
        raise ValueError(f"the question's first {count} tokens do not re-tokenize to {count} tokens")
    return text
