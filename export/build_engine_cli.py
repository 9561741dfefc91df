"""`edgevlm build-engine`: the bundle's ONNX graphs -> TensorRT engines for this machine's GPU."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError

DESCRIPTION = """\
Build TensorRT engines (vision + decoder) for the GPU of this machine from an exported bundle.
Run it on the device that will serve: an engine only runs on the TensorRT release and GPU
architecture it was built with. Precision comes from the bundle (fp16 graphs, INT8/INT4 Q/DQ
graphs); optimization profiles come from the bundle's limits, lowered by the options below.
"""
EPILOG = """\
The engines and their manifest go to --out (default: BUNDLE/engines), where
`edgevlm serve --backend tensorrt` looks for them. Building a 9B model takes tens of minutes
and about as much free memory as its weights; --timing-cache makes rebuilds faster.
Example: edgevlm build-engine --bundle ./bundle-fp16 --max-batch 8 --max-seq-len 4096
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build-engine",
        help="build TensorRT engines for this GPU from a bundle",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder from `edgevlm export`")
    parser.add_argument("--out", type=Path, help="engine folder to write (default: BUNDLE/engines)")
    parser.add_argument("--max-batch", type=int, help="most sequences per step (default: the bundle's limit)")
    parser.add_argument("--max-seq-len", type=int, help="longest sequence, prompt + answer (default: the bundle's)")
    parser.add_argument("--opt-batch", type=int, help="decode batch to tune for (default: max-batch / 2)")
    parser.add_argument("--prefill-chunk", type=int,
                        help="longest prefill chunk; serve with --max-prefill-tokens <= this (default 512)")
    parser.add_argument("--vision-max-images", type=int, default=1,
                        help="largest images per vision call (default 1; larger calls are split)")
    parser.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file, read and updated")
    parser.add_argument("--workspace-mb", type=int, help="TensorRT workspace limit in MiB (default: TensorRT's)")
    parser.set_defaults(run=run)


def request_from_args(args: argparse.Namespace) -> Any:
    """The validated BuildRequest (UserError naming the option otherwise)."""
    from edgevlm.export.tensorrt_build import BuildRequest

    for option in ("max_batch", "max_seq_len", "opt_batch", "prefill_chunk", "vision_max_images", "workspace_mb"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise UserError(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    return BuildRequest(
        bundle_dir=args.bundle,
        out_dir=args.out,
        max_batch=args.max_batch,
        max_seq_len=args.max_seq_len,
        opt_batch=args.opt_batch,
        prefill_chunk=args.prefill_chunk,
        vision_max_images=args.vision_max_images,
        timing_cache=args.timing_cache,
        workspace_mb=args.workspace_mb,
    )


def run(args: argparse.Namespace) -> int:
    from edgevlm.export.tensorrt_build import build_engines, plan_build
    from edgevlm.runtime.backends.trt_preflight import check_backend

    # Every input is checked before TensorRT is touched: a typo must not cost a failed build.
    if not args.bundle.is_dir():
        raise UserError(f"bundle folder not found: {args.bundle}")
    plan = plan_build(request_from_args(args))
    check_backend("tensorrt", action="build-engine")
    manifest = build_engines(plan, _report)
    print(f"engines for {manifest.target.describe()}: {plan.out_dir}")
    print(f"serve them with: edgevlm serve --bundle {plan.bundle.path} --backend tensorrt")
    return 0


def _report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
