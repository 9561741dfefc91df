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
from edgevlm.bench.runtime_side import bench_request, cold_and_image_hit, decode_ms_per_token


def measure(bundles: list[Path], repeats: int = 5, decode_tokens: int = 16, question_tokens: int = 20,
            threads: int = 0) -> list[BundleFigures]:
    from edgevlm.bench.workload import question_text
    from edgevlm.runtime.engine import Engine

    engines = [Engine.from_bundle(b, max_batch=1, max_queue=16, threads=threads) for b in bundles]
    samples: list[dict[str, list[float]]] = [{"ttft": [], "vision": [], "decode": []} for _ in bundles]
    try:
        questions = [question_text(e.preprocessor.tokenizer, question_tokens) for e in engines]
        for engine, question in zip(engines, questions, strict=True):
            engine.generate(bench_request(question, "warmup", 999, 2))
        for r in range(repeats):
            for i in _rotated(len(engines), r):
                _one_repeat(engines[i], questions[i], r, decode_tokens, samples[i])
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


def _one_repeat(engine, question: str, r: int, decode_tokens: int, out: dict[str, list[float]]) -> None:
    cold, hit = cold_and_image_hit(engine, question, r)
    out["ttft"].append(1000 * cold)
    out["vision"].append(1000 * (cold - hit))
    out["decode"].append(decode_ms_per_token(engine, bench_request(question, f"dec{r}", 2000 + r, decode_tokens)))
