"""GPU check without TensorRT: what the TensorRT backend relies on, exercised with torch alone.

1. the device: name, compute capability, memory, measured copy bandwidth;
2. KV sizing: what the free memory holds for the demo model and for GLM-4.6V-Flash;
3. the device KV cache: scatters and row moves on a CUDA stream match the host KVCache exactly;
4. a decode step captured in a CUDA graph: the demo decoder's attention + MLP math (random
   weights, no rotary) over the device cache with static buffers, replayed per (batch, key width)
   bucket; replay must equal eager, a padded bucket must give the unpadded logits; timings.
Exit 0 when all checks pass or there is no CUDA device (it says so), 1 when a check fails.
Run: bench/gpu_check [--steps N]   (a few seconds on any CUDA GPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "demo" / "model" / "config.json"
MB = 1 << 20


@dataclass(frozen=True, slots=True)
class Dims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int


# GLM-4.6V-Flash's language model (40 layers, 2 KV heads of 128): 40 KiB of fp16 KV per token.
GLM_FLASH = Dims(hidden=4096, layers=40, heads=32, kv_heads=2, head_dim=128, ffn=13696, vocab=151552)


def demo_dims() -> Dims:
    """The demo checkpoint's text model (its config.json), or the same defaults without it."""
    text: dict[str, Any] = {}
    if DEMO_CONFIG.is_file():
        config = json.loads(DEMO_CONFIG.read_text())
        text = config.get("text_config", config)
    hidden, heads = text.get("hidden_size", 256), text.get("num_attention_heads", 4)
    return Dims(
        hidden=hidden,
        layers=text.get("num_hidden_layers", 4),
        heads=heads,
        kv_heads=text.get("num_key_value_heads", 2),
        head_dim=text.get("head_dim") or hidden // heads,
        ffn=text.get("intermediate_size", 768),
        vocab=text.get("vocab_size", 272),
    )


# -- 1. device ---------------------------------------------------------------------------------
def check_device(device: Any) -> float:
    from edgevlm.runtime.backends.trt_device import copy_bandwidth, device_info, memory_info

    info = device_info(device)
    free, total = memory_info(device)
    bandwidth = copy_bandwidth(device)
    print(f"device: {info.name}, sm_{info.compute_capability[0]}{info.compute_capability[1]}, "
          f"{info.multiprocessors} SMs, {total / MB:.0f} MB ({free / MB:.0f} MB free)")
    print(f"copy bandwidth: {bandwidth / 1e9:.0f} GB/s (device-to-device, read + write)")
    return bandwidth


# -- 2. KV sizing ------------------------------------------------------------------------------
def check_kv_sizing(device: Any, bandwidth: float) -> None:
    from edgevlm.runtime.backends.trt_device import memory_info
    from edgevlm.runtime.backends.trt_memory import MemoryBudget, decode_tokens_per_s_ceiling, device_kv_layout
    from edgevlm.runtime.kv_cache import KVLayout

    free, total = memory_info(device)
    budget = MemoryBudget(total, free)
    for name, dims in (("demo", demo_dims()), ("GLM-4.6V-Flash", GLM_FLASH)):
        for max_len in (2048, 8192):
            layout = KVLayout(dims.layers, 64, dims.kv_heads, max_len, dims.head_dim, np.dtype(np.float16))
            try:
                rows = device_kv_layout(layout, budget, engine_max_batch=64).rows
                fits = f"{rows} rows fit in free memory"
            except ValueError as exc:
                fits = str(exc)
            print(f"kv {name}: {layout.bytes_per_token / 1024:.1f} KiB/token fp16, max_len {max_len}: {fits}")
    weights = 9.4e9 * 2  # GLM-4.6V-Flash language model at fp16 (bytes)
    ceiling = decode_tokens_per_s_ceiling(bandwidth, int(weights), 0, 1)
    print(f"GLM-4.6V-Flash fp16 decode bound at this bandwidth: {ceiling:.1f} tokens/s per sequence (batch 1)")


# -- 3. device KV cache ------------------------------------------------------------------------
def check_device_cache(device: Any, stream: Any) -> bool:
    """Random decode/prefill writes and row moves on the device cache and on the host KVCache."""
    import torch

    from edgevlm.runtime.backends.trt_kv_cache import DeviceKVCache
    from edgevlm.runtime.kv_cache import KVCache, KVLayout, RowMove

    layout = KVLayout(3, 6, 2, 48, 8, np.dtype(np.float16))
    host, dev = KVCache(layout), DeviceKVCache(layout, torch.float16, device, stream)
    rng = np.random.default_rng(0)
    for _ in range(40):
        batch = int(rng.integers(1, layout.rows + 1))
        first = int(rng.integers(0, layout.rows + 1 - batch))
        seq = 1 if rng.random() < 0.5 else int(rng.integers(2, 6))
        counts = np.full(batch, seq) if seq == 1 else rng.integers(1, seq + 1, batch)
        starts = rng.integers(0, layout.max_len - seq, batch)
        presents = rng.standard_normal((layout.num_layers, 2, batch, 2, seq, 8)).astype(np.float16)
        for layer in range(layout.num_layers):
            host.write(layer, first, starts, counts, presents[layer, 0], presents[layer, 1])
        with torch.cuda.stream(stream):
            dev.write_all(first, starts, counts, torch.from_numpy(presents).to(device))
        src, dst = rng.choice(layout.rows + 1, 2, replace=False)
        move = [RowMove(int(src), int(dst), int(rng.integers(0, layout.max_len)))]
        host.apply(move)
        dev.apply(move)
    stream.synchronize()
    same = all(
        np.array_equal(host_kv[i], dev.storage[i, kind].cpu().numpy())
        for kind, host_kv in enumerate((host.keys, host.values))
        for i in range(layout.num_layers)
    )
    print(f"device KV cache vs host KVCache after 40 writes + moves: {'identical' if same else 'DIFFERENT'}")
    return same


# -- 4. CUDA-graph decode step -----------------------------------------------------------------
class TorchDecoder:
    """The demo decoder's step math (RMSNorm, GQA attention over cache ++ new, SwiGLU MLP, lm
    head) in torch, random weights, no rotary: enough to exercise static buffers and graphs."""

    def __init__(self, dims: Dims, device: Any, dtype: Any) -> None:
        import torch

        g = torch.Generator().manual_seed(0)

        def weight(*shape: int) -> Any:
            return (torch.randn(*shape, generator=g) / shape[0] ** 0.5).to(device, dtype)

        q, kv = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
        self.dims = dims
        self.layers = [
            {"q": weight(dims.hidden, q), "k": weight(dims.hidden, kv), "v": weight(dims.hidden, kv),
             "o": weight(q, dims.hidden), "gate": weight(dims.hidden, dims.ffn), "up": weight(dims.hidden, dims.ffn),
             "down": weight(dims.ffn, dims.hidden)}
            for _ in range(dims.layers)
        ]
        self.head = weight(dims.hidden, dims.vocab)

    def step(self, embeds: Any, bias: Any, storage: Any, presents: Any, logits: Any) -> None:
        """One token per row. # embeds [b, 1, H], bias [b, 1, 1, t]; reads storage rows [0, b),
        positions [0, t - 1); writes presents [L, 2, b, kv, 1, D] and logits [b, vocab]"""
        import torch

        d = self.dims
        b, t = embeds.shape[0], bias.shape[-1]
        x = embeds
        for i, w in enumerate(self.layers):
            h = _rms(x)
            q = (h @ w["q"]).view(b, 1, d.heads, d.head_dim).transpose(1, 2)
            k = (h @ w["k"]).view(b, 1, d.kv_heads, d.head_dim).transpose(1, 2)
            v = (h @ w["v"]).view(b, 1, d.kv_heads, d.head_dim).transpose(1, 2)
            presents[i, 0].copy_(k)
            presents[i, 1].copy_(v)
            keys = torch.cat([storage[i, 0, :b, :, : t - 1], k], dim=2).repeat_interleave(d.heads // d.kv_heads, 1)
            values = torch.cat([storage[i, 1, :b, :, : t - 1], v], dim=2).repeat_interleave(d.heads // d.kv_heads, 1)
            scores = (q @ keys.transpose(-1, -2)).float() / d.head_dim**0.5 + bias
            attn = (torch.softmax(scores, dim=-1).to(x.dtype) @ values).transpose(1, 2).reshape(b, 1, -1)
            x = x + attn @ w["o"]
            h = _rms(x)
            x = x + (torch.nn.functional.silu(h @ w["gate"]) * (h @ w["up"])) @ w["down"]
        logits.copy_((_rms(x)[:, 0] @ self.head).float())


def _rms(x: Any) -> Any:
    import torch

    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype)


@dataclass(slots=True)
class StaticStep:
    """Fixed-address buffers of one bucket and its captured graph."""

    embeds: Any
    bias: Any
    presents: Any
    logits: Any
    graph: Any = None


def capture(model: TorchDecoder, storage: Any, batch: int, total: int, stream: Any) -> StaticStep:
    import torch

    d, device = model.dims, storage.device
    step = StaticStep(
        embeds=torch.zeros(batch, 1, d.hidden, dtype=storage.dtype, device=device),
        bias=torch.zeros(batch, 1, 1, total, dtype=torch.float32, device=device),
        presents=torch.zeros(d.layers, 2, batch, d.kv_heads, 1, d.head_dim, dtype=storage.dtype, device=device),
        logits=torch.zeros(batch, d.vocab, dtype=torch.float32, device=device),
    )
    run = lambda: model.step(step.embeds, step.bias, storage, step.presents, step.logits)  # noqa: E731
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up outside the capture: lazy inits must not be captured
            run()
    torch.cuda.current_stream().wait_stream(stream)
    step.graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(step.graph, stream=stream):
        run()
    return step


def check_graph_decode(device: Any, stream: Any, steps: int) -> bool:
    import torch

    from edgevlm.runtime.backends.trt_buckets import DecodeBuckets, pad_decode
    from edgevlm.runtime.backends.trt_kv_cache import DeviceKVCache
    from edgevlm.runtime.kv_cache import KVLayout

    dims = demo_dims()
    model = TorchDecoder(dims, device, torch.float16)
    layout = KVLayout(dims.layers, 8, dims.kv_heads, 1024, dims.head_dim, np.dtype(np.float16))
    cache = DeviceKVCache(layout, torch.float16, device, stream)
    with torch.cuda.stream(stream):
        cache.storage.normal_(0, 1)
    buckets = DecodeBuckets.for_cache(layout.rows, layout.max_len)
    rows, past = 5, 300
    bucket = buckets.pick(rows, past + 1)
    assert bucket is not None
    rng = np.random.default_rng(1)
    embeds = (rng.standard_normal((rows, 1, dims.hidden)) * 0.5).astype(np.float16)
    lengths = rng.integers(past // 2, past + 1, rows)
    bias = np.where(np.arange(past + 1)[None] < lengths[:, None], 0, -np.inf).astype(np.float32)
    bias[:, past] = 0.0
    bias = bias[:, None, None, :]

    eager = StaticStep(torch.from_numpy(embeds).to(device), torch.from_numpy(bias).to(device),
                       torch.zeros(dims.layers, 2, rows, dims.kv_heads, 1, dims.head_dim, dtype=torch.float16,
                                   device=device), torch.zeros(rows, dims.vocab, device=device))
    stream.wait_stream(torch.cuda.current_stream())  # the uploads above ran on the default stream
    with torch.cuda.stream(stream):
        model.step(eager.embeds, eager.bias, cache.storage, eager.presents, eager.logits)
    graphed = capture(model, cache.storage, *bucket, stream)
    padded = pad_decode(embeds, np.zeros((3, rows, 1), np.int64), bias, *bucket)
    with torch.cuda.stream(stream):
        graphed.embeds.copy_(torch.from_numpy(padded.inputs_embeds))
        graphed.bias.copy_(torch.from_numpy(padded.attention_bias))
        graphed.graph.replay()
    stream.synchronize()
    diff = (graphed.logits[:rows] - eager.logits).abs().max().item()
    same_argmax = bool(torch.equal(graphed.logits[:rows].argmax(-1), eager.logits.argmax(-1)))
    kv_diff = (graphed.presents[:, :, :rows] - eager.presents).abs().max().item()
    ok = diff < 5e-2 and same_argmax and kv_diff < 5e-2
    print(f"graph decode, bucket {bucket} for {rows} rows x {past + 1} keys vs eager unpadded: "
          f"max |logit diff| {diff:.2e}, argmax {'equal' if same_argmax else 'DIFFERENT'}, "
          f"max |new K/V diff| {kv_diff:.2e}: {'ok' if ok else 'FAIL'}")
    return ok & _time_graph(model, cache, graphed, eager, stream, steps)


def _time_graph(model: TorchDecoder, cache: Any, graphed: StaticStep, eager: StaticStep, stream: Any,
                steps: int) -> bool:
    import torch

    def timed(run: Callable[[], None]) -> float:
        stream.synchronize()
        start = time.perf_counter()
        with torch.cuda.stream(stream):
            for _ in range(steps):
                run()
        stream.synchronize()
        return (time.perf_counter() - start) / steps

    eager_s = timed(lambda: model.step(graphed.embeds, graphed.bias, cache.storage, graphed.presents, graphed.logits))
    expected = graphed.logits.clone()
    graph_s = timed(graphed.graph.replay)
    # Same kernels on the same buffers: equal up to nondeterministic reductions, if any.
    diff = (graphed.logits - expected).abs().max().item()
    print(f"decode step, {model.dims.layers} layers, bucket {tuple(graphed.bias.shape[::3])}: eager "
          f"{eager_s * 1e6:.0f} us, CUDA graph {graph_s * 1e6:.0f} us ({eager_s / graph_s:.1f}x); "
          f"replay vs eager on the same buffers: max |diff| {diff:.1e}")
    return diff <= 1e-3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed decode steps (default 200)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_check: skipped, torch is not installed (it needs torch with CUDA)")
        return 0
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device visible"
        print(f"gpu_check: skipped, no CUDA device (torch {torch.__version__}, {build})")
        return 0
    device = torch.device("cuda", 0)
    started = time.perf_counter()
    with torch.cuda.device(device):
        stream = torch.cuda.Stream(device)
        bandwidth = check_device(device)
        check_kv_sizing(device, bandwidth)
        results = [check_device_cache(device, stream), check_graph_decode(device, stream, args.steps)]
    ok = all(results)
    print(f"gpu_check: {'all checks passed' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
