"""GLM-4.6V-Flash's real widths (1 text layer, 1 vision block, random weights) exported in fp16:
external data, fp16 parity against the float32 reference, and the export's peak memory.

The checkpoint is built and the export run in their own processes, so the measured peak RSS is
the export's alone (`RUSAGE_CHILDREN` of a wrapper whose only child is `edgevlm export`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PEAK_BUDGET = 2.5  # x the model's tensor bytes
# Runs `edgevlm export` as its only child and prints the child's peak RSS (KiB on Linux).
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
    "sys.exit(code)\n"
)


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_real_width_fp16_export(tmp_path: Path) -> None:
    checkpoint, out = tmp_path / "checkpoint", tmp_path / "bundle"
    subprocess.run([sys.executable, str(HERE / "realwidth_checkpoint.py"), str(checkpoint)], check=True)
    command = [sys.executable, "-m", "edgevlm.cli", "export", "--model", str(checkpoint), "--out", str(out),
               "--dtype", "fp16", "--max-seq-len", "4096"]
    run = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    peak = int(run.stdout.split("peak_rss_kib")[1].split()[0]) * 1024

    manifest = json.loads((out / "manifest.json").read_text())
    model_bytes = manifest["source"]["tensor_bytes"]
    files = manifest["files"]
    bundle_bytes = sum(entry["bytes"] for entry in files.values())
    validation = manifest["validation"]
    figures = {
        "model_bytes": model_bytes,
        "bundle_bytes": bundle_bytes,
        "peak_rss_bytes": peak,
        "peak_over_model": round(peak / model_bytes, 2),
        "export_seconds": manifest["export"]["seconds"],
        "stage_seconds": manifest["export"]["stage_seconds"],
        **{k: validation[k] for k in ("vision_max_abs", "vision_max_rel", "logits_max_abs", "logits_max_rel",
                                      "greedy_matched", "greedy_near_ties")},
    }
    print("real-width fp16 export:", json.dumps(figures))

    assert manifest["architecture"]["hidden_size"] == 4096 and manifest["architecture"]["vocab_size"] == 151552
    assert manifest["dtype"] == "fp16" and manifest["embed_tokens"]["dtype"] == "float16"
    # Weights live in external data files; the protobufs stay small.
    assert files["decoder.onnx.data"]["bytes"] > 1.5 * 2**30 and files["decoder.onnx"]["bytes"] < 2**20
    assert files["vision.onnx.data"]["bytes"] > 0.4 * 2**30
    assert bundle_bytes > 2 * 2**30
    assert validation["skipped"] is False and validation["tolerance_rel"] == 1e-2
    assert validation["greedy_matched"] + validation["greedy_near_ties"] == 32
    assert peak <= PEAK_BUDGET * model_bytes, f"export peak RSS {figures['peak_over_model']} x model bytes"
