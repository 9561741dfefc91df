"""The exported-bundle backend for `edgevlm eval --bundle`: held-out samples through the runtime engine.

It answers exactly like the reference backend (`edgevlm.runtime.demo_answers` keeps the same chat
messages, greedy decoding and end-token cut), so the two can be compared answer for answer.
"""

from __future__ import annotations

import functools
from pathlib import Path

from edgevlm.demo.evaluate import AnswerBatch
from edgevlm.errors import UserError


def check_bundle(bundle_dir: Path) -> None:
    """Raise UserError unless `bundle_dir` looks like a bundle (a folder with manifest.json)."""
    if not bundle_dir.is_dir():
        raise UserError(f"bundle folder not found: {bundle_dir}")
    if not (bundle_dir / "manifest.json").is_file():
        raise UserError(f"not an edgevlm bundle (no manifest.json): {bundle_dir}")


def load_bundle_backend(bundle_dir: Path, max_new_tokens: int, cpu_form: bool = True) -> AnswerBatch:
    """`answer_batch(samples) -> answers` through an ONNX Runtime engine on this bundle
    (`cpu_form`: see Engine.from_bundle)."""
    check_bundle(bundle_dir)
    from edgevlm.runtime.demo_answers import answer_batch
    from edgevlm.runtime.engine import Engine

    engine = Engine.from_bundle(bundle_dir, cpu_form=cpu_form)
    return functools.partial(answer_batch, engine, max_new_tokens=max_new_tokens)
