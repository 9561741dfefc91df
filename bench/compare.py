"""`edgevlm bench compare`: several `bench engine` reports of one model (fp32, int8, int4 bundles)
side by side, each against the first: bundle size, TTFT, vision encoder time, decode speed. With
`--bundles`, the bundles themselves are measured in one process, interleaved (interleaved.py).

The vision encoder's time is the cold TTFT minus the image-cache-hit TTFT of the same request: the
two differ only in the encoder run (the hit skips it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from edgevlm.bench.report import text_table
from edgevlm.errors import UserError


@dataclass(frozen=True, slots=True)
class BundleFigures:
    name: str
    size_mb: float
    ttft_ms: float
    vision_ms: float
    decode_ms_per_token: float
    decode_tokens_per_s: dict[str, float]


def bundle_size_mb(bundle: Path) -> float:
    """Bytes of the bundle's graphs, their external data and the embedding table."""
    files = [p for p in bundle.iterdir() if p.is_file() and (p.suffix in (".onnx", ".npy") or p.name.endswith(".data"))]
    return sum(p.stat().st_size for p in files) / (1 << 20)


def load(report_path: Path) -> BundleFigures:
    try:
        report = json.loads(report_path.read_text())
        runtime = report["sides"]["runtime"]
        bundle = Path(report["bundle"])
        return BundleFigures(
            name=label(bundle),
            size_mb=bundle_size_mb(bundle),
            ttft_ms=runtime["ttft_ms"],
            vision_ms=runtime["ttft_ms"] - runtime["ttft_image_cache_hit_ms"],
            decode_ms_per_token=runtime["decode_ms_per_token"],
            decode_tokens_per_s=runtime.get("decode_tokens_per_s", {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"not a readable `bench engine` report: {report_path} ({exc})") from exc


def label(bundle: Path) -> str:
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError):
        return bundle.name
    quant = manifest.get("quantization") or {}
    mode = quant.get("mode") or manifest.get("dtype", "?")
    return f"{bundle.name} ({mode})"


def rows(figures: list[BundleFigures]) -> list[tuple[str, ...]]:
    base = figures[0]
    out: list[tuple[str, ...]] = []
    for fig in figures:
        out.append((
            fig.name,
            f"{fig.size_mb:,.1f} MB ({fig.size_mb / base.size_mb:.2f}x)",
            f"{fig.ttft_ms:,.0f} ms ({fig.ttft_ms / base.ttft_ms:.2f}x)",
            f"{fig.vision_ms:,.0f} ms ({base.vision_ms / fig.vision_ms:.2f}x faster)" if fig.vision_ms > 0 else "n/a",
            f"{fig.decode_ms_per_token:,.1f} ms ({base.decode_ms_per_token / fig.decode_ms_per_token:.2f}x faster)",
        ))
    return out


def format_table(figures: list[BundleFigures]) -> str:
    header = ("bundle", "size (x first)", "TTFT (x first)", "vision encoder", "decode, batch 1")
    return "\n".join(text_table(header, rows(figures)))


def write_outputs(figures: list[BundleFigures], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench_compare.json"
    json_path.write_text(json.dumps([_as_dict(f) for f in figures], indent=2) + "\n")
    written = [json_path]
    png = _plot(figures, out_dir / "bench_compare.png")
    if png is not None:
        written.append(png)
    return written


def _as_dict(fig: BundleFigures) -> dict:
    return {field.name: getattr(fig, field.name) for field in fields(fig)}


def _plot(figures: list[BundleFigures], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    base = figures[0]
    metrics = {
        "size": [base.size_mb / f.size_mb for f in figures],
        "TTFT": [base.ttft_ms / f.ttft_ms for f in figures],
        "vision": [base.vision_ms / f.vision_ms if f.vision_ms > 0 else 0.0 for f in figures],
        "decode b=1": [base.decode_ms_per_token / f.decode_ms_per_token for f in figures],
    }
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(figures)
    for i, f in enumerate(figures):
        xs = [m + i * width for m in range(len(metrics))]
        ax.bar(xs, [values[i] for values in metrics.values()], width, label=f.name)
    ax.set_xticks([m + width * (len(figures) - 1) / 2 for m in range(len(metrics))], list(metrics))
    ax.set_ylabel(f"x better than {base.name} (higher is better)")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
