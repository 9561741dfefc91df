"""`edgevlm doctor`: versions, GPU, usable backends; `--tensorrt` adds the TensorRT self-test."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError

DESCRIPTION = """\
Report the versions, the GPU and which backends can run on this machine, saying what is
missing and how to get it. With --tensorrt, also build TensorRT engines for the demo bundle (or
--bundle), answer the held-out demo questions with TensorRT and with ONNX Runtime on the CPU,
require >= 99% identical answers (unquantized bundles), and time decode against the GPU's
memory bandwidth. Exit status: 0, or 1 when --tensorrt cannot run or fails.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check this machine: versions, GPU, backends (--tensorrt: self-test)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tensorrt", action="store_true", help="run the TensorRT self-test (needs a GPU)")
    parser.add_argument("--bundle", type=Path, help="bundle for the self-test (default: the demo model's)")
    parser.add_argument("--limit", type=int, default=600, help="demo questions in the self-test (default 600)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgevlm.runtime.doctor import run_doctor

    if not 1 <= args.limit <= 600:
        raise UserError(f"--limit must be in [1, 600], got {args.limit}")
    if args.bundle is not None and not (args.bundle / "manifest.json").is_file():
        raise UserError(f"not an edgevlm bundle (no manifest.json): {args.bundle}")
    return run_doctor(args.tensorrt, args.bundle, args.limit)
