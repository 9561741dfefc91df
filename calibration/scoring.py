"""A bundle's accuracy, measured exactly as `edgevlm eval --bundle` measures it: the demo held-out
set (or the user's eval file) through the runtime's engine, greedy decoding, scored per question.

User eval file: JSONL, one {"image": path (relative to the file), "prompt": str, "answer": str} per
line; an answer is right when it equals the reference after case folding and dropping whitespace
and sentence punctuation.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgevlm.errors import UserError

EVAL_BATCH = 16
MAX_NEW_TOKENS = 64
_IGNORED = re.compile(r"[\s.。!！?？,，]+")


@dataclass(frozen=True, slots=True)
class Score:
    correct: int
    total: int
    seconds: float

    @property
    def points(self) -> float:
        """Accuracy in percentage points."""
        return 100.0 * self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"correct": self.correct, "total": self.total, "accuracy": round(self.points, 3),
                "seconds": round(self.seconds, 1)}


@dataclass(frozen=True, slots=True)
class EvalItem:
    image: Path
    prompt: str
    answer: str


def describe_eval(limit: int | None, eval_file: Path | None) -> str:
    if eval_file is not None:
        return f"{eval_file}" + (f" (first {limit})" if limit else "")
    from edgevlm.demo.evaluate import HELDOUT_SIZE

    return f"demo held-out questions 1-{min(limit or HELDOUT_SIZE, HELDOUT_SIZE)} of {HELDOUT_SIZE}"


def score_bundle(bundle_dir: Path, limit: int | None, eval_file: Path | None, memo: bool = False,
                 cpu_form: bool = True) -> Score:
    """The bundle's score (`cpu_form=False`: its Q/DQ graphs, see Engine.from_bundle); with `memo`,
    remembered for this process by the bundle's manifest digest and the questions (quantizing one
    source several ways scores the source once)."""
    key = (_manifest_digest(bundle_dir), limit, None if eval_file is None else str(eval_file.absolute()), cpu_form)
    if memo and key in _MEMO:
        return _MEMO[key]
    start = time.perf_counter()
    if eval_file is None:
        correct, total = _score_demo(bundle_dir, limit, cpu_form)
    else:
        correct, total = _score_file(bundle_dir, read_eval_file(eval_file)[:limit], cpu_form)
    result = Score(correct, total, time.perf_counter() - start)
    if memo:
        _MEMO[key] = result
    return result


_MEMO: dict[tuple[str, int | None, str | None, bool], Score] = {}


def _manifest_digest(bundle_dir: Path) -> str:
    # The manifest holds every file's sha256, so its digest names the bundle's whole content.
    return hashlib.sha256((bundle_dir / "manifest.json").read_bytes()).hexdigest()


def _score_demo(bundle_dir: Path, limit: int | None, cpu_form: bool) -> tuple[int, int]:
    from edgevlm.demo.bundle_backend import load_bundle_backend
    from edgevlm.demo.evaluate import HELDOUT_SIZE, EvalConfig, run_backend, score

    config = EvalConfig(limit=min(limit or HELDOUT_SIZE, HELDOUT_SIZE), batch_size=EVAL_BATCH,
                        max_new_tokens=MAX_NEW_TOKENS)
    samples = config.samples()
    answer = load_bundle_backend(bundle_dir, config.max_new_tokens, cpu_form)
    run = run_backend("bundle", str(bundle_dir), samples, answer, config.batch_size)
    overall = score(samples, run.answers).overall
    return overall.correct, overall.total


def _score_file(bundle_dir: Path, items: Sequence[EvalItem], cpu_form: bool) -> tuple[int, int]:
    from edgevlm.calibration.calib_data import load_image
    from edgevlm.runtime.engine import Engine
    from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart

    engine = Engine.from_bundle(bundle_dir, cpu_form=cpu_form)
    requests = [
        GenerationRequest(f"eval-{i}", (Message("user", (ImagePart(load_image(item.image)), TextPart(item.prompt))),),
                          SamplingParams(max_tokens=MAX_NEW_TOKENS))
        for i, item in enumerate(items)
    ]
    try:
        results = engine.generate(requests)
    finally:
        engine.close()
    right = sum(_normalise(r.text) == _normalise(item.answer) for r, item in zip(results, items, strict=True))
    return right, len(items)


def _normalise(text: str) -> str:
    return _IGNORED.sub("", text.casefold())


def read_eval_file(path: Path) -> list[EvalItem]:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read eval file {path}: {exc}") from None
    items = [_eval_item(path, number, line) for number, line in enumerate(lines, 1) if line]
    if not items:
        raise UserError(f"no questions in eval file {path}")
    return items


def _eval_item(path: Path, number: int, line: str) -> EvalItem:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {number} is not JSON ({exc.msg})") from None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("image", "prompt", "answer")):
        raise UserError(f'{path}: line {number} needs "image", "prompt" and "answer" strings')
    image = path.parent / record["image"]
    if not image.is_file():
        raise UserError(f"{path}: line {number}: image not found: {image}")
    return EvalItem(image, record["prompt"], record["answer"])
