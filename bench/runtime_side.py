"""The workload through edgevlm's runtime (ONNX Runtime, no torch). Run in its own process so its
peak RSS is its own."""

from __future__ import annotations

import itertools
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from edgevlm.bench.bandwidth import (
    decoder_weight_bytes,
    floor_ms_per_step,
    gemv_seconds,
    probe_matrix,
)
from edgevlm.bench.workload import Workload, bench_image, question_text
from edgevlm.runtime.engine import Engine
from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart

FLOOR_PAIRS = 7  # batch-1 decodes, each timed beside its own bandwidth probe
PROBE_READS = 7  # GEMV reads per probe (their median is the probe's bandwidth)


def run(bundle: Path, workload: Workload, threads: int) -> dict:
    started = time.perf_counter()
    engine = Engine.from_bundle(bundle, max_batch=max(workload.concurrency), max_queue=1024, threads=threads)
    load_s = time.perf_counter() - started
    question = question_text(engine.preprocessor.tokenizer, workload.question_tokens)

    def request(request_id: str, seed: int, tokens: int) -> GenerationRequest:
        return bench_request(question, request_id, seed, tokens)

    engine.generate(request("warmup", 999, 2))
    cold, hit, prefix_hit = [], [], []
    for i in range(workload.repeats):
        first, again = cold_and_image_hit(engine, question, i)
        cold.append(first)
        hit.append(again)
        # Both caches: the same image and prompt again reuse the prompt's K/V too.
        prefix_hit.append(timed(lambda i=i: engine.generate(request(f"again{i}", 1000 + i, 1))))
    throughput = {}
    for concurrency in workload.concurrency:
        engine.clear_caches()
        batch = [request(f"c{concurrency}-{j}", 3000 + j, workload.decode_tokens) for j in range(concurrency)]
        seconds = timed(lambda batch=batch: engine.generate(batch))
        throughput[str(concurrency)] = concurrency * workload.decode_tokens / seconds
    engine.clear_caches()
    decode_rate = {str(c): _decode_tokens_per_s(engine, [request(f"d{c}-{j}", 4000 + j, 4 * workload.decode_tokens)
                                                         for j in range(c)]) for c in workload.concurrency}
    # Peak RSS before the floor's pairs, whose bandwidth probe maps a matrix of its own.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pairs = decode_beside_floor(engine, lambda i: request(f"dec{i}", 2000 + i, workload.decode_tokens),
                                decoder_weight_bytes(bundle), max(FLOOR_PAIRS, workload.repeats))
    return {
        "load_s": load_s,
        "ttft_ms": 1000 * min(cold),
        "ttft_image_cache_hit_ms": 1000 * min(hit),
        "ttft_prefix_cache_hit_ms": 1000 * min(prefix_hit),
        "decode_ms_per_token": min(p["decode_mean_ms"] for p in pairs),
        "decode_floor_pairs": pairs,
        "decode_floor_ratio": statistics.median(p["ratio"] for p in pairs),
        "tokens_per_s": throughput,
        "decode_tokens_per_s": decode_rate,
        "prompt_tokens": len(engine.prepare(request("count", 0, 1)).prompt),
        "peak_rss_mb": peak_rss_mb,
        "kv_cache_mb": engine.cache.layout.nbytes / (1 << 20),
        "providers": getattr(engine.backend, "providers", []),
        "graph_files": {g: p.name for g, p in getattr(engine.backend, "graph_files", {}).items()},
    }


def decode_beside_floor(engine: Engine, make_request: Callable[[int], GenerationRequest], weight_bytes: int,
                        pairs: int) -> list[dict]:
    """Decode at batch 1 timed right after a read-bandwidth probe over as many bytes as the weights,
    `pairs` times: each decode is set against the floor of its own moment. Rule: this machine's
    bandwidth moves by +-20 % within a minute, so a floor measured once, apart from the decode,
    mostly measures that drift. Both sides are medians (of the probe's reads, of the decode's
    token-to-token times), so a stall on either side moves neither; the mean is kept as well."""
    out = []
    matrix = probe_matrix(weight_bytes)
    gemv_seconds(matrix, 1)  # BLAS starts its threads on the first call: not timed
    for i in range(pairs):
        bandwidth = matrix.nbytes / statistics.median(gemv_seconds(matrix, PROBE_READS))
        steps_ms = token_intervals_ms(engine, make_request(i))
        floor_ms = floor_ms_per_step(weight_bytes, bandwidth)
        decode_ms = statistics.median(steps_ms)
        out.append({"gb_per_s": bandwidth / 1e9, "floor_ms": floor_ms, "decode_ms": decode_ms,
                    "decode_mean_ms": statistics.fmean(steps_ms), "ratio": decode_ms / floor_ms})
    return out


def bench_request(question: str, request_id: str, seed: int, tokens: int) -> GenerationRequest:
    """The bench image of `seed` and the question, answered with exactly `tokens` tokens."""
    message = Message("user", (ImagePart(bench_image(seed)), TextPart(question)))
    return GenerationRequest(request_id, (message,), SamplingParams(max_tokens=tokens, min_tokens=tokens))


def cold_and_image_hit(engine: Engine, question: str, i: int) -> tuple[float, float]:
    """Seconds to the first token for image `1000 + i` new to the engine, then for the same
    request with only the image-embedding cache (the prompt is prefilled again): cold - hit is
    the vision encoder."""
    engine.clear_caches()
    cold = timed(lambda: engine.generate(bench_request(question, f"ttft{i}", 1000 + i, 1)))
    if engine.prefix_cache is not None:
        engine.prefix_cache.clear()
    hit = timed(lambda: engine.generate(bench_request(question, f"hit{i}", 1000 + i, 1)))
    return cold, hit


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_ms_per_token(engine: Engine, request: GenerationRequest) -> float:
    """Time between the first and the last token of one request, per token."""
    return statistics.fmean(token_intervals_ms(engine, request))


def token_intervals_ms(engine: Engine, request: GenerationRequest) -> list[float]:
    """Milliseconds between each token of one request and the next (the first token's prefill
    excluded)."""
    seq = engine.add_request(request)
    stamps = []
    while engine.has_work:
        before = len(seq.output_ids)
        engine.step()
        if len(seq.output_ids) > before:
            stamps.append(time.perf_counter())
    return [1000 * (b - a) for a, b in itertools.pairwise(stamps)]


def _decode_tokens_per_s(engine: Engine, requests: list[GenerationRequest]) -> float:
    """Steady-state decode rate with every sequence in the batch: tokens per second over the steps
    after the last prefill has finished and before the first sequence ends (prefill excluded)."""
    seqs = [engine.add_request(r) for r in requests]
    while engine.has_work and any(not s.output_ids for s in seqs):
        engine.step()
    start, produced, steps = time.perf_counter(), sum(len(s.output_ids) for s in seqs), 0
    # Long answers (4 x decode_tokens) so no sequence ends while the last ones are still prefilling.
    while steps < 16 and all(len(s.output_ids) < s.max_tokens for s in seqs):
        engine.step()
        steps += 1
    tokens, seconds = sum(len(s.output_ids) for s in seqs) - produced, time.perf_counter() - start
    for seq in seqs:
        engine.abort(seq.request_id)
    while engine.has_work:
        engine.step()
    return tokens / seconds if steps else float("nan")
