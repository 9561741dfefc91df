"""The workload through HF transformers `generate` (PyTorch, CPU): the reference to beat. Batches
are static (HF has no continuous batching); there is no image cache."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from edgevlm.bench.workload import Workload, bench_image, question_text


def run(model_dir: Path, workload: Workload, threads: int) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, LogitsProcessor, LogitsProcessorList

    from edgevlm.demo.hf_compat import load_processor

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    processor = load_processor(model_dir)
    load_s = time.perf_counter() - started
    question = question_text(processor.tokenizer, workload.question_tokens)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    class Stamps(LogitsProcessor):
        """Called once per generated token, right after that step's forward pass."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    def generate(seeds: list[int], tokens: int, stamps: Stamps | None = None) -> None:
        inputs = processor(text=[prompt] * len(seeds), images=[bench_image(s) for s in seeds],
                           return_tensors="pt", padding=True)
        extra = {"logits_processor": LogitsProcessorList([stamps])} if stamps else {}
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **extra)

    generate([999], 2)
    cold = [_timed(lambda i=i: generate([1000 + i], 1)) for i in range(workload.repeats)]
    decode = []
    for i in range(workload.repeats):
        stamps = Stamps()
        generate([2000 + i], workload.decode_tokens, stamps)
        decode.append(1000 * (stamps.times[-1] - stamps.times[0]) / (len(stamps.times) - 1))
    throughput = {}
    for concurrency in workload.concurrency:
        seconds = _timed(lambda c=concurrency: generate([3000 + j for j in range(c)], workload.decode_tokens))
        throughput[str(concurrency)] = concurrency * workload.decode_tokens / seconds
    return {
        "load_s": load_s,
        "ttft_ms": 1000 * min(cold),
        "ttft_image_cache_hit_ms": None,
        "decode_ms_per_token": min(decode),
        "tokens_per_s": throughput,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
