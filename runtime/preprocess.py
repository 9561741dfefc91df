"""Messages -> prompt tokens, M-RoPE positions and image specs, with the bundle's own tokenizer,
chat template and `Glm4vImageProcessorPil` (transformers' classes, never copies; no torch); the
processor's pixels come from runtime/pixels.py, which reuses its rescale and normalise.

Pixels are not computed here: an image's grid follows from its size (the processor's
`smart_resize`), which is all the prompt needs; pixels are made only on an image-cache miss.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgevlm.runtime.image_cache import image_digest
from edgevlm.runtime.pixels import PixelPacker
from edgevlm.runtime.rope_index import rope_index, token_types
from edgevlm.runtime.types import ImagePart, Message, RequestRejected, TextPart

IMAGE_TOKEN = "<|image|>"


@dataclass(frozen=True, slots=True)
class ImageSpec:
    key: str  # content digest (image-cache key)
    image: Image.Image
    grid_thw: tuple[int, int, int]  # in patches
    num_tokens: int  # merged image tokens in the prompt


@dataclass(frozen=True, slots=True)
class Prompt:
    input_ids: np.ndarray  # [seq] int64
    positions: np.ndarray  # [3, seq] int64
    rope_delta: int  # decode position = cache length + rope_delta
    images: tuple[ImageSpec, ...]
    image_token_index: np.ndarray  # [image tokens] positions of the placeholders, images in order

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class Preprocessor:
    def __init__(self, tokenizer, image_processor, chat_template: str | None, image_token_id: int) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.image_token_id = image_token_id
        self.merge = int(image_processor.merge_size)
        self._packer = PixelPacker(image_processor)
        self._decoder = tokenizer.backend_tokenizer
        # The Rust tokenizer may not be entered from two threads at once (submit encodes on the
        # server's thread while the engine thread decodes): calls are serialised, each is short.
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, path: str | Path, image_token_id: int) -> Preprocessor:
        from transformers import AutoTokenizer, Glm4vImageProcessorPil

        root = Path(path)
        tokenizer = AutoTokenizer.from_pretrained(root)
        template_file = root / "chat_template.jinja"
        template = template_file.read_text() if template_file.is_file() else tokenizer.chat_template
        return cls(tokenizer, Glm4vImageProcessorPil.from_pretrained(root), template, image_token_id)

    # -- prompt ----------------------------------------------------------------------------
    def __call__(self, messages: tuple[Message, ...]) -> Prompt:
        images = [part.image for m in messages for part in m.parts if isinstance(part, ImagePart)]
        specs = tuple(self.image_spec(image) for image in images)
        text = self.render(messages)
        ids = self.tokenize(text, specs)
        index = np.flatnonzero(ids == self.image_token_id)
        if len(index) != sum(s.num_tokens for s in specs):
            raise RequestRejected("message text must not contain image placeholder tokens")
        grids = np.array([s.grid_thw for s in specs], np.int64).reshape(-1, 3)
        positions, delta = rope_index(token_types(ids, self.image_token_id), grids, self.merge)
        return Prompt(ids, positions, delta, specs, index)

    def render(self, messages: tuple[Message, ...]) -> str:
        """The chat template's text, with one image placeholder per image, ending in the
        assistant's generation prompt."""
        if not messages:
            raise RequestRejected("messages must not be empty")
        conversation = [_chat_dict(m) for m in messages]
        with self._lock:
            return self.tokenizer.apply_chat_template(
                conversation, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )

    def tokenize(self, text: str, images: tuple[ImageSpec, ...]) -> np.ndarray:
        """Expand each placeholder to its image's token count and tokenize, as Glm4vProcessor does
        (special tokens added unless the text already starts with the BOS token)."""
        pieces = text.split(IMAGE_TOKEN)
        if len(pieces) != len(images) + 1:
            raise RequestRejected(
                f"the prompt has {len(pieces) - 1} image placeholders for {len(images)} images "
                "(message text must not contain image placeholder tokens)"
            )
        expanded = pieces[0] + "".join(
            IMAGE_TOKEN * s.num_tokens + piece for s, piece in zip(images, pieces[1:], strict=True)
        )
        bos = self.tokenizer.bos_token
        add_special = not (bos is not None and text.startswith(bos))
        with self._lock:
            ids = self.tokenizer(expanded, add_special_tokens=add_special)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    # -- images ----------------------------------------------------------------------------
    def image_spec(self, image: Image.Image) -> ImageSpec:
        grid = self.grid(image.width, image.height)
        return ImageSpec(image_digest(image), image, grid, grid[0] * grid[1] * grid[2] // self.merge**2)

    def grid(self, width: int, height: int) -> tuple[int, int, int]:
        """(t, h, w) in patches, exactly the grid the processor will produce for this size."""
        from transformers.models.glm4v.image_processing_pil_glm4v import smart_resize

        proc = self.image_processor
        if proc.do_resize:
            try:
                height, width = smart_resize(
                    num_frames=proc.temporal_patch_size,
                    height=height,
                    width=width,
                    temporal_factor=proc.temporal_patch_size,
                    factor=proc.patch_size * proc.merge_size,
                    min_pixels=proc.size.shortest_edge,
                    max_pixels=proc.size.longest_edge,
                )
            except ValueError as exc:
                raise RequestRejected(f"image of {width}x{height} cannot be processed: {exc}") from exc
        return 1, height // proc.patch_size, width // proc.patch_size

    def pixels(self, images: list[ImageSpec]) -> np.ndarray:
        """The processor's output for these images, concatenated (runtime/pixels.py makes it).
        # -> [patches, 1176] float32"""
        return self._packer([(s.image, s.grid_thw) for s in images])

    # -- text out --------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        with self._lock:
            return self._decoder.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id])


def _chat_dict(message: Message) -> dict:
    texts = [p.text for p in message.parts if isinstance(p, TextPart)]
    if len(texts) == len(message.parts):  # text only: plain string content, as chat templates expect
        return {"role": message.role, "content": "".join(texts)}
    return {"role": message.role, "content": [_part_dict(p) for p in message.parts]}


def _part_dict(part: TextPart | ImagePart) -> dict:
    return {"type": "text", "text": part.text} if isinstance(part, TextPart) else {"type": "image"}
