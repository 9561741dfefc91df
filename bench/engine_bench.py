"""`edgevlm bench engine`: the same workload through HF transformers and the runtime, each in its
own process (separate peak RSS; the runtime's process never imports torch), plus the
memory-bandwidth floor of a decode step.

    python -m edgevlm.bench.engine_bench --side runtime --bundle B --out result.json   # one side
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgevlm.bench.bandwidth import copy_bandwidth, decoder_weight_bytes, floor_ms_per_step, read_bandwidth
from edgevlm.bench.workload import Workload
from edgevlm.errors import UserError

SIDES = ("hf", "runtime")


@dataclass(frozen=True, slots=True)
class EngineBenchConfig:
    model_dir: Path | None  # None: runtime only
    bundle_dir: Path
    out_dir: Path
    workload: Workload
    threads: int = 0


def run_engine_bench(config: EngineBenchConfig) -> dict:
    sides = {}
    for side in SIDES:
        if side == "hf" and config.model_dir is None:
            continue
        print(f"bench: running the workload through {side} ...", file=sys.stderr, flush=True)
        sides[side] = _run_side(side, config)
    weights = decoder_weight_bytes(config.bundle_dir)
    copy, read = copy_bandwidth(), read_bandwidth()
    # The floor is the one measured beside the runtime's decodes (runtime_side.decode_beside_floor);
    # the copy and the sum are recorded for reference.
    bandwidth = 1e9 * statistics.median(p["gb_per_s"] for p in sides["runtime"]["decode_floor_pairs"])
    floor_ms = floor_ms_per_step(weights, bandwidth)
    return {
        "workload": config.workload.as_dict(),
        "model": str(config.model_dir) if config.model_dir else None,
        "bundle": str(config.bundle_dir),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "threads": config.threads,
        "sides": sides,
        "bandwidth": {
            "copy_gb_per_s": copy / 1e9,
            "read_gb_per_s": read / 1e9,
            "floor_source": "GEMV beside each decode, median",
            "floor_gb_per_s": bandwidth / 1e9,
            "decoder_weight_mb": weights / (1 << 20),
            "floor_ms_per_decode_step": floor_ms,
            "floor_tokens_per_s": {str(c): c * 1000 / floor_ms for c in config.workload.concurrency},
        },
    }


def _run_side(side: str, config: EngineBenchConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "edgevlm.bench.engine_bench", "--side", side,
                   "--bundle", str(config.bundle_dir), "--out", str(out), "--threads", str(config.threads),
                   "--workload", json.dumps(config.workload.as_dict())]
        if config.model_dir is not None:
            command += ["--model", str(config.model_dir)]
        completed = subprocess.run(command, check=False)
        if completed.returncode != 0 or not out.is_file():
            raise UserError(f"the {side} side of the benchmark failed (exit {completed.returncode})")
        return json.loads(out.read_text())


def _side_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workload", required=True)
    args = parser.parse_args(argv)
    raw = json.loads(args.workload)
    workload = Workload(**{**raw, "concurrency": tuple(raw["concurrency"])})
    if args.side == "runtime":
        # As `edgevlm serve` does: transformers imports torch whenever it is installed, the runtime
        # needs none of it, so the serving configuration (and its RSS) is torch-free.
        sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
        from edgevlm.bench import runtime_side

        result = runtime_side.run(args.bundle, workload, args.threads)
        result["torch_imported"] = sys.modules.get("torch") is not None
    else:
        from edgevlm.bench import hf_side

        result = hf_side.run(args.model, workload, args.threads)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_side_main(sys.argv[1:]))
