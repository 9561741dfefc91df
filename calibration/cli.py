"""`edgevlm quantize`: an fp32 bundle -> an int8 (explicit Q/DQ) or int4 (weight-only) bundle,
refused when it loses more held-out accuracy than allowed."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError

EPILOG = """\
Stages: calibrate, prepare, quantize, evaluate, gate, write. Calibration runs real samples through
the runtime (its preprocessing, the vision encoder, the decoder's prefill and first decode steps);
by default the demo's synthetic scenes, or --calib-images (+ --calib-prompts). The gate scores the
original and the quantized bundle on the same questions (as `edgevlm eval --bundle`); a larger drop
than --max-accuracy-drop exits 1 and writes nothing.
Example: edgevlm quantize --bundle ./bundle --out ./bundle-int8 --mode int8 --samples 64
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quantize", help="quantize a bundle to int8 (Q/DQ) or int4 (weight-only), gated on accuracy",
        description="Quantize an fp32 edgevlm bundle; the result is a normal bundle served without flags.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, type=Path, help="fp32 bundle folder (edgevlm export)")
    parser.add_argument("--out", required=True, type=Path, help="quantized bundle folder to create")
    parser.add_argument("--mode", required=True, choices=("int8", "int4"), help="int8: W8A8 Q/DQ; int4: weight-only")
    parser.add_argument("--method", help="int8: percentile (default) | minmax | entropy; "
                                         "int4: rtn (default) | awq | gptq")
    parser.add_argument("--calib-images", type=Path, help="folder of calibration images (default: demo scenes)")
    parser.add_argument("--calib-prompts", type=Path,
                        help="prompts for those images: one per line, or JSONL with a \"prompt\" field")
    parser.add_argument("--samples", type=int, default=32, help="calibration samples (default 32)")
    parser.add_argument("--calib-cache", type=Path,
                        help="reuse a quantized bundle's calibration_cache.json instead of calibrating (int8)")
    parser.add_argument("--block-size", type=int, default=32, help="int4 block size: 32 (default), 64 or 128")
    parser.add_argument("--max-accuracy-drop", type=float,
                        help="accuracy points the bundle may lose (default 1.0 for int8, 2.0 for int4)")
    parser.add_argument("--allow-accuracy-drop", action="store_true",
                        help="write the bundle even when the drop exceeds the budget (scores are recorded)")
    parser.add_argument("--eval-limit", type=int, help="score only the first N questions (default: all)")
    parser.add_argument("--eval-file", type=Path,
                        help='JSONL {"image", "prompt", "answer"} to score instead of the demo held-out set')
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.set_defaults(run=run)


def _options(args: argparse.Namespace) -> Any:
    from edgevlm.calibration.options import QuantizeOptions

    try:
        return QuantizeOptions(
            bundle_dir=args.bundle, out_dir=args.out, mode=args.mode, method=args.method, samples=args.samples,
            calib_images=args.calib_images, calib_prompts=args.calib_prompts, calib_cache=args.calib_cache,
            block_size=args.block_size, max_accuracy_drop=args.max_accuracy_drop,
            allow_accuracy_drop=args.allow_accuracy_drop, eval_limit=args.eval_limit, eval_file=args.eval_file,
            force=args.force,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _interrupt_on_sigterm(signum: int, frame: Any) -> None:
    # SIGTERM unwinds like Ctrl-C, so the staging folder is removed on the way out.
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """A refused gate exits 1 with the numbers; user mistakes exit 2 (UserError)."""
    options = _options(args)
    # ORT's 4-bit quantizer calls logging.basicConfig(level=INFO) on import; configuring first
    # makes that a no-op, so its per-node INFO lines stay out of the progress display.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(levelname)s: %(message)s")
    from edgevlm.calibration.gate import AccuracyGateError
    from edgevlm.calibration.pipeline import run_quantize
    from edgevlm.calibration.progress import Progress

    previous = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        result = run_quantize(options, Progress(sys.stderr))
    except AccuracyGateError as exc:
        print(f"edgevlm quantize: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    sizes = result.manifest["quantization"]["sizes"]
    print(f"wrote {result.out_dir}: graphs {sizes['source']['total'] / 2**20:.1f} MiB -> "
          f"{sizes['quantized']['total'] / 2**20:.1f} MiB; {result.gate.summary(options.mode)}")
    return 0
