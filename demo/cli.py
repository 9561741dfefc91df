"""`edgevlm eval`: the held-out set through the PyTorch reference and/or an exported bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from edgevlm.errors import UserError

DESCRIPTION = """\
Answer the fixed held-out set (600 questions: colour, shape, count, box, describe; English and
Chinese) with greedy decoding and print accuracy per question type, per language and overall.
--model runs the transformers checkpoint (PyTorch reference), --bundle an exported bundle through
the runtime; with both, the report also gives the share of identical answers.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="accuracy on the held-out demo questions", description=DESCRIPTION)
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: the demo model, demo/model)")
    parser.add_argument("--bundle", type=Path, help="exported bundle folder, run through the runtime")
    parser.add_argument("--limit", type=int, default=600, help="only the first N questions (default: all 600)")
    parser.add_argument("--batch-size", type=int, default=16, help="questions per generate call (default: 16)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length cap (default: 64)")
    parser.add_argument("--report", type=Path, help="write the JSON report (scores and every answer) here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgevlm.demo.bundle_backend import check_bundle, load_bundle_backend
    from edgevlm.demo.checkpoint import DEMO_DIR
    from edgevlm.demo.evaluate import HELDOUT_SIZE, AnswerBatch, EvalConfig, build_report, format_summary, run_backend
    from edgevlm.demo.reference import ReferenceBackend, check_checkpoint

    try:
        config = EvalConfig(limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    model_dir = args.model if args.model is not None or args.bundle is not None else DEMO_DIR
    # Check every input before the slow work starts.
    if model_dir is not None:
        check_checkpoint(model_dir)
    if args.bundle is not None:
        check_bundle(args.bundle)
    backends: list[tuple[str, str, AnswerBatch]] = []
    if model_dir is not None:
        backends.append(("model", str(model_dir), ReferenceBackend(model_dir, config.max_new_tokens)))
    if args.bundle is not None:
        backends.append(("bundle", str(args.bundle), load_bundle_backend(args.bundle, config.max_new_tokens)))
    samples = config.samples()
    runs = [run_backend(name, source, samples, fn, config.batch_size, _Progress(name)) for name, source, fn in backends]
    report = build_report(samples, runs)
    print(f"held-out questions 1-{len(samples)} of {HELDOUT_SIZE}, greedy decoding")
    print(format_summary(report))
    if args.report is not None:
        _write_report(args.report, report)
        print(f"report: {args.report}")
    return 0


def _write_report(path: Path, report: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write report {path}: {exc.strerror}") from exc


class _Progress:
    """`done/total` on stderr: rewritten in place on a terminal, a line per tenth otherwise (logs, CI)."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = self.stream.isatty()
        self.last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = done * 10 // total
        if self.is_tty:
            self.stream.write(f"\r{self.name}: {done}/{total}" + ("\n" if done == total else ""))
        elif tenth != self.last_tenth:
            self.stream.write(f"{self.name}: {done}/{total}\n")
        self.last_tenth = tenth
        self.stream.flush()
