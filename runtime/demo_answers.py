"""Held-out demo questions through the engine, answered exactly as the PyTorch reference does
(`edgevlm.demo.reference`): one user turn (the image, then the question), greedy decoding, the
text up to the first end token with special tokens such as the box markers kept."""

from __future__ import annotations

from collections.abc import Sequence

from edgevlm.runtime.engine import Engine, GenerationResult
from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart


def sample_request(sample, request_id: str, max_new_tokens: int = 64) -> GenerationRequest:
    """`sample` is an `edgevlm.demo.questions.Sample`."""
    from edgevlm.demo.shapes import render

    message = Message("user", (ImagePart(render(sample.scene)), TextPart(sample.question)))
    return GenerationRequest(request_id, (message,), SamplingParams(max_tokens=max_new_tokens))


def answer_results(engine: Engine, samples: Sequence, max_new_tokens: int = 64) -> list[GenerationResult]:
    """All samples through the engine at once (continuous batching), results in sample order."""
    requests = [sample_request(s, f"sample-{i}", max_new_tokens) for i, s in enumerate(samples)]
    return engine.generate(requests)


def answer_batch(engine: Engine, samples: Sequence, max_new_tokens: int = 64) -> list[str]:
    results = answer_results(engine, samples, max_new_tokens)
    for result in results:
        if result.finish_reason == "error":
            raise RuntimeError(f"{result.request_id} failed: {result.error}")
    return [r.text for r in results]


def answer(engine: Engine, sample, max_new_tokens: int = 64) -> str:
    return answer_batch(engine, [sample], max_new_tokens)[0]
