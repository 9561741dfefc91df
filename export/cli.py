"""`edgevlm export`: a GLM-4V checkpoint folder -> a validated ONNX bundle folder."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError

EPILOG = """\
Stages: load, trace, convert, optimise, validate. The bundle is built beside --out and renamed
into place only after the parity gate passes, so a failed or interrupted export leaves nothing.
Example: edgevlm export --model ./GLM-4.6V-Flash --out ./bundle-fp16 --dtype fp16
"""


def register(subparsers: Any) -> None:
    """Add the `export` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a GLM-4V checkpoint to an ONNX bundle",
        description="Export a GLM-4V (Glm4vForConditionalGeneration) checkpoint to an edgevlm ONNX bundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="checkpoint folder (config.json, *.safetensors)")
    parser.add_argument("--out", required=True, type=Path, help="bundle folder to create")
    parser.add_argument("--dtype", default="fp32", help="fp32 | fp16 | bf16 (default fp32)")
    parser.add_argument("--max-batch", type=int, default=16, help="largest batch the runtime may run (default 16)")
    parser.add_argument("--max-seq-len", type=int, default=None,
                        help="longest context (default: the model's max_position_embeddings)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, at least 16)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--skip-validate", action="store_true",
                        help="skip the PyTorch vs ONNX Runtime parity gate (recorded in the manifest)")
    parser.set_defaults(run=run)


def _options(args: argparse.Namespace) -> Any:
    from edgevlm.export.options import ExportOptions

    try:
        return ExportOptions(
            model_dir=args.model,
            out_dir=args.out,
            dtype=args.dtype,
            max_batch=args.max_batch,
            max_seq_len=args.max_seq_len,
            force=args.force,
            validate=not args.skip_validate,
            opset=args.opset,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C, so the staging folder is removed on the way out.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Run the export; a parity failure exits 1 with one line, user mistakes exit 2 (UserError)."""
    options = _options(args)
    from edgevlm.export.parity import ParityError
    from edgevlm.export.pipeline import run_export
    from edgevlm.export.progress import Progress

    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        result = run_export(options, Progress(sys.stderr))
    except ParityError as exc:
        print(f"edgevlm export: error: {exc}; nothing was written", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    files = result.manifest["files"]
    total = sum(entry["bytes"] for entry in files.values())
    print(f"wrote {result.out_dir} ({len(files)} files, {total / 2**20:.1f} MiB)")
    return 0
