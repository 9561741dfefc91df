"""`edgevlm bench`: performance measurements, one sub-subcommand each.

    edgevlm bench engine --model CHECKPOINT --bundle BUNDLE   HF transformers vs the runtime
    edgevlm bench make-model small --out DIR                    a ~0.5 B random-weight checkpoint
    edgevlm bench compare FP32.json INT8.json ...               quantized bundles against the first
    edgevlm bench compare --bundles FP32 INT8 INT4              the same, measured here, interleaved
    edgevlm bench serve --concurrency 1,4,8,16,32,64            HTTP load on `edgevlm serve`

Heavy imports (torch, onnxruntime) stay inside the run functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgevlm.bench.serve import register_serve
from edgevlm.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (engine, make-model)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    parser.set_defaults(run=_missing_subcommand(parser))
    _register_engine(commands)
    _register_make_model(commands)
    _register_compare(commands)
    register_serve(commands)  # `bench serve`: HTTP load against `edgevlm serve` (bench/serve.py)


def _missing_subcommand(parser: argparse.ArgumentParser):
    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run


# -- bench engine -----------------------------------------------------------------------------
def _register_engine(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "engine", help="HF transformers vs the runtime on one workload",
        description="Run one workload (a 448x448 image + a 20-token question) through HF transformers "
        "and the runtime: TTFT, image-cache-hit TTFT, decode ms/token at batch 1, tokens/s at several "
        "concurrency levels, peak RSS, and the memory-bandwidth floor of a decode step.",
    )
    parser.add_argument("--model", type=Path, help="checkpoint folder for the HF side (omit: runtime only)")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle exported from that checkpoint")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for the JSON (+ PNG)")
    parser.add_argument("--decode-tokens", type=int, default=64, help="answer length, forced (default 64)")
    parser.add_argument("--question-tokens", type=int, default=20, help="question length (default 20)")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for latencies (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="threads per side; 0 = library default")
    parser.set_defaults(run=_run_engine)


def _run_engine(args: argparse.Namespace) -> int:
    from edgevlm.bench.engine_bench import EngineBenchConfig, run_engine_bench
    from edgevlm.bench.report import format_table, write_outputs
    from edgevlm.bench.workload import Workload

    if not (args.bundle / "manifest.json").is_file():
        raise UserError(f"not a bundle (no manifest.json): {args.bundle}")
    if args.model is not None and not (args.model / "config.json").is_file():
        raise UserError(f"not a checkpoint (no config.json): {args.model}")
    try:
        levels = tuple(int(c) for c in args.concurrency.split(","))
        workload = Workload(args.question_tokens, args.decode_tokens, levels, args.repeats)
    except ValueError as exc:
        raise UserError(f"bad benchmark option: {exc}") from exc
    report = run_engine_bench(EngineBenchConfig(args.model, args.bundle, args.out, workload, args.threads))
    print(format_table(report))
    for path in write_outputs(report, args.out):
        print(f"wrote {path}")
    return 0


# -- bench make-model ------------------------------------------------------------------------
def _register_make_model(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("make-model", help="write a random-weight GLM-4V checkpoint for benchmarks")
    parser.add_argument("size", choices=["small"], help="small: ~0.5 B (hidden 1024 x 16 layers, vocab 151552)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing checkpoint")
    parser.set_defaults(run=_run_make_model)


def _run_make_model(args: argparse.Namespace) -> int:
    from edgevlm.bench.make_model import make_model

    params = make_model(args.size, args.out, seed=args.seed, force=args.force)
    print(f"wrote {args.out} ({params / 1e9:.2f} B parameters, random weights)", file=sys.stdout)
    return 0


# -- bench compare ---------------------------------------------------------------------------
def _register_compare(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare", help="fp32/int8/int4 bundles side by side (reports, or the bundles measured interleaved)",
        description="Bundle size, TTFT, vision encoder time and decode speed, each against the first "
        "(e.g. the fp32 bundle): from `bench engine` reports, or with --bundles measured here in one "
        "process, the bundles' repeats interleaved so that machine drift reaches all alike.",
    )
    parser.add_argument("reports", type=Path, nargs="*", help="bench_engine.json files; the first is the base")
    parser.add_argument("--bundles", type=Path, nargs="+",
                        help="bundle folders to measure instead; the first is the base")
    parser.add_argument("--repeats", type=int, default=5, help="with --bundles: rounds, median taken (default 5)")
    parser.add_argument("--decode-tokens", type=int, default=16,
                        help="with --bundles: tokens timed per decode (default 16)")
    parser.add_argument("--threads", type=int, default=0, help="with --bundles: threads per engine; 0 = default")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/compare"), help="folder for the JSON (+ PNG)")
    parser.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from edgevlm.bench.compare import format_table, load, write_outputs

    if bool(args.reports) == bool(args.bundles):
        raise UserError("give either bench_engine.json reports or --bundles DIR ..., not both or neither")
    if args.bundles:
        if args.repeats < 1 or args.decode_tokens < 2:
            raise UserError("--repeats must be >= 1 and --decode-tokens >= 2")
        from edgevlm.bench.interleaved import measure

        figures = measure(args.bundles, args.repeats, args.decode_tokens, threads=args.threads)
    else:
        figures = [load(path) for path in args.reports]
    print(format_table(figures))
    for path in write_outputs(figures, args.out):
        print(f"wrote {path}")
    return 0
