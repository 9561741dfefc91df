"""The calibration cache kept in a quantized bundle (`calibration_cache.json`): per graph, ONNX
Runtime's activation ranges (its own cache format, so `quantize_static` reads them back as is) plus
the int8 scale each range gives, for reading and for other tools (TensorRT calibration tables).

Reuse: `edgevlm quantize --calib-cache BUNDLE/calibration_cache.json` skips calibration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.errors import UserError

CACHE_FILE = "calibration_cache.json"
FORMAT = "edgevlm-calibration-cache"
VERSION = 1
GRAPHS: tuple[str, ...] = ("vision", "decoder")
INT8_MAX = 127


def graph_cache_file(work_dir: Path, graph: str) -> Path:
    return work_dir / f"{graph}.calibration.json"


def write_cache(path: Path, work_dir: Path, method: str, samples: int, source: str) -> dict[str, Any]:
    """Merge the per-graph ORT caches found in `work_dir` into `path`; returns the merged dict."""
    graphs = {g: json.loads(graph_cache_file(work_dir, g).read_text()) for g in GRAPHS
              if graph_cache_file(work_dir, g).is_file()}
    cache = {
        "format": FORMAT, "version": VERSION, "method": method, "samples": samples, "source": source,
        "scales": {g: _scales(data) for g, data in graphs.items()},
        "ort": graphs,
    }
    path.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
    return cache


def split_cache(path: Path, work_dir: Path, method: str) -> dict[str, Any]:
    """Check a saved cache and write its per-graph ORT caches into `work_dir` for reuse."""
    cache = read_cache(path)
    if cache["method"] != method:
        raise UserError(f"{path} was calibrated with --method {cache['method']}, not {method}")
    for graph, data in cache["ort"].items():
        graph_cache_file(work_dir, graph).write_text(json.dumps(data))
    return cache


def read_cache(path: Path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read calibration cache {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"calibration cache {path} is not JSON ({exc.msg})") from None
    if not isinstance(cache, dict) or cache.get("format") != FORMAT or cache.get("version") != VERSION:
        raise UserError(f"{path} is not an edgevlm calibration cache (format {FORMAT} version {VERSION})")
    missing = [g for g in GRAPHS if g not in cache.get("ort", {})]
    if missing:
        raise UserError(f"calibration cache {path} has no ranges for the {missing[0]} graph")
    return cache


def _magnitude(value: Any) -> float:
    """ORT stores a bound as a plain float (histogram methods) or an encoded numpy array (MinMax)."""
    data = value["data"] if isinstance(value, dict) else value
    return float(np.abs(np.asarray(data, dtype=np.float64)).max())


def _scales(ort_cache: dict[str, Any]) -> dict[str, float]:
    """Symmetric int8 scale per tensor: max(|lowest|, |highest|) / 127."""
    scales: dict[str, float] = {}
    for name, entry in ort_cache.get("data", {}).items():
        scales[name] = max(_magnitude(entry[key]) for key in ("lowest", "highest")) / INT8_MAX
    return scales
