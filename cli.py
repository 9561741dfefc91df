"""`edgevlm` command line: one parser, a subcommand per module that registers itself.

Each subcommand module exposes `register(subparsers)` and keeps heavy imports (torch,
onnxruntime) inside its run function, so `edgevlm --help` stays fast and serve needs no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edgevlm import __version__
from edgevlm.errors import UserError

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "edgevlm.demo.cli",
    "edgevlm.export.cli",
    "edgevlm.export.build_engine_cli",
    "edgevlm.calibration.cli",
    "edgevlm.server.cli",
    "edgevlm.bench.cli",
    "edgevlm.runtime.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevlm", description="Edge inference for GLM-4.xV vision-language models.")
    parser.add_argument("--version", action="version", version=f"edgevlm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A subcommand whose module is not part of this install is simply absent.
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the process's own command line (not a call from Python): its entry point
        from edgevlm.runtime.huge_pages import reexec_with_huge_pages

        reexec_with_huge_pages()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"edgevlm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgevlm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
