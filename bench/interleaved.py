"""`edgevlm bench compare --bundles A B ...`: bundles measured side by side in one process.

`bench engine` runs one bundle per process, minutes apart; on a shared machine the speed drifts
by 20-40 % over that time, which then shows up as a ratio between bundles. Here every bundle is
loaded at once and each repeat measures all of them back to back, the order rotated each round;
each figure is the median of its repeats, so drift reaches every bundle alike.

Per repeat and bundle: cold TTFT (a new 448x448 image + question, caches cleared), the same
request again with the image cached but the prompt prefilled again (cold minus this = the vision
encoder), and decode ms/token at batch 1.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from edgevlm.bench.compare import BundleFigures, bundle_size_mb, label


def measure(bundles: list[Path], repeats: int = 5, decode_tokens: int = 16, question_tokens: int = 20,
            threads: int = 0) -> list[BundleFigures]:
    from edgevlm.runtime.engine import Engine

    engines = [Engine.from_bundle(b, max_batch=1, max_queue=16, threads=threads) for b in bundles]
    samples: list[dict[str, list[float]]] = [{"ttft": [], "vision": [], "decode": []} for _ in bundles]
    try:
        for engine in engines:
            engine.generate([_request(engine, "warmup", 999, 2, question_tokens)])
        for r in range(repeats):
            for i in _rotated(len(engines), r):
                _one_repeat(engines[i], r, decode_tokens, question_tokens, samples[i])
            print(f"bench compare: repeat {r + 1}/{repeats}", file=sys.stderr, flush=True)
    finally:
        for engine in engines:
            engine.close()
    return [
        BundleFigures(label(b), bundle_size_mb(b), statistics.median(s["ttft"]), statistics.median(s["vision"]),
                      statistics.median(s["decode"]), {})
        for b, s in zip(bundles, samples, strict=True)
    ]


def _rotated(count: int, shift: int) -> list[int]:
    """0..count-1 starting at shift: no bundle always runs first (right after another's work)."""
    return [(shift + i) % count for i in range(count)]


def _one_repeat(engine, r: int, decode_tokens: int, question_tokens: int, out: dict[str, list[float]]) -> None:
    from edgevlm.bench.runtime_side import decode_ms_per_token, timed

    engine.clear_caches()
    cold = timed(lambda: engine.generate([_request(engine, f"cold{r}", 1000 + r, 1, question_tokens)]))
    if engine.prefix_cache is not None:
        engine.prefix_cache.clear()  # the image-embedding cache alone: the prompt is prefilled again
    hit = timed(lambda: engine.generate([_request(engine, f"hit{r}", 1000 + r, 1, question_tokens)]))
    out["ttft"].append(1000 * cold)
    out["vision"].append(1000 * (cold - hit))
    out["decode"].append(decode_ms_per_token(engine, _request(engine, f"dec{r}", 2000 + r, decode_tokens,
                                                               question_tokens)))


def _request(engine, request_id: str, seed: int, tokens: int, question_tokens: int):
    from edgevlm.bench.workload import bench_image, question_text
    from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart

    question = question_text(engine.preprocessor.tokenizer, question_tokens)
    message = Message("user", (ImagePart(bench_image(seed)), TextPart(question)))
    return GenerationRequest(request_id, (message,), SamplingParams(max_tokens=tokens, min_tokens=tokens))
