"""The PyTorch reference backend: greedy answers from a transformers GLM-4V checkpoint folder.

This is what an exported bundle is measured against: the same held-out questions through
`AutoModelForImageTextToText.generate`, batched with left padding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgevlm.demo.questions import Sample
from edgevlm.demo.shapes import render
from edgevlm.errors import UserError

SUPPORTED_MODEL_TYPES: tuple[str, ...] = ("glm4v",)


def check_checkpoint(model_dir: Path) -> None:
    """Raise UserError unless `model_dir` is a GLM-4V checkpoint folder (read from config.json only)."""
    if not model_dir.is_dir():
        raise UserError(f"model folder not found: {model_dir}")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"not a transformers checkpoint (no config.json): {model_dir}")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise UserError(f"unreadable config.json in {model_dir}: {exc}") from exc
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"not a glm4v checkpoint (model_type {model_type!r}): {model_dir}")


def chat_messages(sample: Sample) -> list[dict[str, Any]]:
    """The sample as one user turn: the image, then the question (GLM-4V's order)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]


class ReferenceBackend:
    """`answer_batch(samples) -> answers` through transformers on the CPU, greedy decoding."""

    def __init__(self, model_dir: Path, max_new_tokens: int = 64) -> None:
        check_checkpoint(model_dir)
        import torch
        from transformers import AutoModelForImageTextToText
        from transformers.utils import logging as hf_logging

        from edgevlm.demo.hf_compat import load_processor

        hf_logging.disable_progress_bar()
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
            self.processor = load_processor(model_dir)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load checkpoint {model_dir}: {str(exc).splitlines()[0]}") from exc
        self.torch = torch
        self.max_new_tokens = max_new_tokens
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = frozenset(eos if isinstance(eos, list) else [eos])

    def prompt(self, sample: Sample) -> str:
        return self.processor.apply_chat_template(chat_messages(sample), add_generation_prompt=True, tokenize=False)

    def __call__(self, samples: Sequence[Sample]) -> list[str]:
        # The tokenizer pads on the left, so every row's answer starts at the same column.
        inputs = self.processor(
            text=[self.prompt(s) for s in samples],
            images=[render(s.scene) for s in samples],
            return_tensors="pt",
            padding=True,
        )
        with self.torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        start = inputs["input_ids"].shape[1]
        return [self.decode(row[start:].tolist()) for row in output]

    def decode(self, token_ids: list[int]) -> str:
        """Text up to the first end token; rows that finished early are padded after it."""
        end = next((i for i, t in enumerate(token_ids) if t in self.eos_ids), len(token_ids))
        return self.processor.tokenizer.decode(token_ids[:end], skip_special_tokens=False)
