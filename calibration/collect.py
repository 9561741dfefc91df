"""Calibration samples through the runtime's engine, recording every vision and decoder input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgevlm.calibration.calib_data import CalibrationItem
from edgevlm.calibration.recorder import Feed, RecordingBackend
from edgevlm.errors import UserError

# Answers are cut short: the decoder's ranges come from the prompts' prefill and the first
# decode steps; longer answers add time, not new activation ranges.
CALIBRATION_NEW_TOKENS = 16
# Rows per engine step: feeds (and their KV copies) stay small whatever the bundle's max_batch.
CALIBRATION_BATCH = 4


@dataclass(frozen=True, slots=True)
class CalibrationFeeds:
    vision: tuple[Feed, ...]
    decoder: tuple[Feed, ...]
    num_samples: int
    num_prefill: int


def collect_feeds(bundle_dir: Path, items: Sequence[CalibrationItem],
                  max_new_tokens: int = CALIBRATION_NEW_TOKENS) -> CalibrationFeeds:
    """Generate (greedy) an answer to every item and keep the graph inputs the engine produced."""
    from edgevlm.runtime.backends import create_backend
    from edgevlm.runtime.bundle import load_bundle
    from edgevlm.runtime.engine import Engine
    from edgevlm.runtime.limits import EngineLimits
    from edgevlm.runtime.preprocess import Preprocessor

    bundle = load_bundle(bundle_dir)
    limits = EngineLimits(max_batch=min(CALIBRATION_BATCH, bundle.limits.max_batch), image_cache_mb=0,
                          prefix_cache_mb=0)
    inner = create_backend("onnxruntime", bundle, max_step_tokens=limits.max_prefill_tokens,
                           max_rows=limits.max_batch)
    recorder = RecordingBackend(inner, bundle.architecture.num_layers)
    engine = Engine(bundle, recorder, Preprocessor.from_dir(bundle.path, bundle.tokens.image_token_id), limits)
    try:
        results = engine.generate([_request(i, item, max_new_tokens) for i, item in enumerate(items)])
    finally:
        engine.close()
    failed = [r for r in results if r.finish_reason == "error"]
    if failed:
        # Requests the runtime rejects (image too large, prompt too long) are bad calibration input.
        raise UserError(f"calibration sample {failed[0].request_id} failed in the runtime: {failed[0].error}")
    return CalibrationFeeds(tuple(recorder.vision_feeds), tuple(recorder.decoder_feeds), len(items),
                            recorder.num_prefill)


def _request(index: int, item: CalibrationItem, max_new_tokens: int):
    from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart

    message = Message("user", (ImagePart(item.image), TextPart(item.prompt)))
    return GenerationRequest(f"calibration-{index}", (message,), SamplingParams(max_tokens=max_new_tokens))
