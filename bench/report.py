"""The engine benchmark's outputs: a text table, the JSON, and a PNG when matplotlib is there."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.1f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(metric, HF transformers, runtime, runtime vs HF)."""
    hf, rt = report["sides"].get("hf", {}), report["sides"].get("runtime", {})
    out = []

    def add(name: str, key: str, unit: str, higher_is_better: bool) -> None:
        a, b = hf.get(key), rt.get(key)
        ratio = "" if a in (None, 0) or b in (None, 0) else f"{(b / a if higher_is_better else a / b):.2f}x"
        out.append((name, _fmt(a, unit), _fmt(b, unit), ratio))

    add("TTFT, 448x448 image + question", "ttft_ms", " ms", False)
    add("TTFT, same image again (image-embedding cache)", "ttft_image_cache_hit_ms", " ms", False)
    add("TTFT, same image and prompt again (+ prefix KV reuse)", "ttft_prefix_cache_hit_ms", " ms", False)
    add("decode, batch 1", "decode_ms_per_token", " ms/token", False)
    for concurrency in report["workload"]["concurrency"]:
        a = hf.get("tokens_per_s", {}).get(str(concurrency))
        b = rt.get("tokens_per_s", {}).get(str(concurrency))
        ratio = f"{b / a:.2f}x" if a and b else ""
        out.append((f"throughput, {concurrency} concurrent", _fmt(a, " tok/s"), _fmt(b, " tok/s"), ratio))
    for concurrency in report["workload"]["concurrency"]:
        b = rt.get("decode_tokens_per_s", {}).get(str(concurrency))
        out.append((f"decode only (prefill excluded), {concurrency} concurrent", "", _fmt(b, " tok/s"), ""))
    add("peak RSS", "peak_rss_mb", " MB", False)
    add("load time", "load_s", " s", False)
    return out


def text_table(header: tuple[str, ...], body: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns, a dashed rule under the header."""
    table = [header, *body]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_table(report: dict) -> str:
    lines = text_table(("metric", "HF transformers", "runtime (ORT)", "runtime vs HF"), rows(report))
    bw = report["bandwidth"]
    lines.append("")
    source = bw.get("floor_source", "best of numpy copy and all-core read")
    lines.append(
        f"memory-bandwidth floor: {bw['decoder_weight_mb']:.1f} MB of decoder weights per step / "
        f"{bw.get('floor_gb_per_s', bw['copy_gb_per_s']):.1f} GB/s ({source}) = "
        f"{bw['floor_ms_per_decode_step']:.2f} ms per decode step"
    )
    runtime = report["sides"].get("runtime", {})
    if runtime.get("ttft_ms") and runtime.get("ttft_image_cache_hit_ms") is not None:
        lines.append(f"runtime vision encoder (cold TTFT - image-cache-hit TTFT): "
                     f"{runtime['ttft_ms'] - runtime['ttft_image_cache_hit_ms']:.1f} ms")
    decode = runtime.get("decode_ms_per_token")
    pairs = runtime.get("decode_floor_pairs")
    if pairs:
        ratios = sorted(p["ratio"] for p in pairs)
        lines.append(f"runtime decode at batch 1: {runtime['decode_floor_ratio']:.2f} x the floor "
                     f"(median of {len(ratios)} decodes, each timed beside its own bandwidth probe, medians "
                     f"of both; "
                     f"range {ratios[0]:.2f}-{ratios[-1]:.2f})")
    elif decode:
        lines.append(f"runtime decode at batch 1: {decode / bw['floor_ms_per_decode_step']:.2f} x the floor")
    rates = runtime.get("decode_tokens_per_s", {})
    top = str(max(report["workload"]["concurrency"]))
    if rates.get("1") and rates.get(top):
        lines.append(f"runtime decode scaling: {top} concurrent = {rates[top] / rates['1']:.2f} x batch 1")
    return "\n".join(lines)


def write_outputs(report: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench_engine.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    written = [json_path]
    png = _plot(report, out_dir / "bench_engine.png")
    if png is not None:
        written.append(png)
    return written


def _plot(report: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    levels = report["workload"]["concurrency"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for side, label in (("hf", "HF transformers"), ("runtime", "runtime (ORT)")):
        values = report["sides"].get(side, {}).get("tokens_per_s")
        if values:
            ax.plot(levels, [values[str(c)] for c in levels], marker="o", label=label)
    floor = report["bandwidth"]["floor_tokens_per_s"]
    ax.plot(levels, [floor[str(c)] for c in levels], linestyle="--", label="bandwidth floor")
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("tokens/s")
    ax.set_xscale("log", base=2)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
