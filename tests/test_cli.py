"""The `edgevlm` command line: help for every subcommand, and user errors as one line with exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edgevlm import __version__
from edgevlm.cli import build_parser, main
from edgevlm.errors import UserError

EDGEVLM = str(Path(sys.executable).parent / "edgevlm")


def subcommands() -> list[str]:
    [action] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(action.choices)


def test_console_script_help_lists_the_subcommands() -> None:
    result = subprocess.run([EDGEVLM, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: edgevlm")
    for name in subcommands():
        assert name in result.stdout
    assert "eval" in subcommands()


def test_help_imports_no_torch() -> None:
    # Subcommands keep heavy imports inside their run functions: serving needs no torch.
    code = "import sys; from edgevlm.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: edgevlm {name}")
    assert len(out.splitlines()) > 3


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"edgevlm {__version__}"


def test_no_subcommand_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: edgevlm")


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [EDGEVLM, "eval", "--model", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"edgevlm eval: error: model folder not found: {tmp_path / 'nowhere'}\n"


def test_user_error_raised_by_any_subcommand_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edgevlm.demo.cli

    def fail(args: argparse.Namespace) -> int:
        raise UserError("that file is not an image")

    monkeypatch.setattr(edgevlm.demo.cli, "run", fail)
    assert main(["eval"]) == 2
    assert capsys.readouterr().err == "edgevlm eval: error: that file is not an image\n"


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import edgevlm.demo.cli

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(edgevlm.demo.cli, "run", interrupted)
    assert main(["eval"]) == 130
    assert capsys.readouterr().err == "edgevlm eval: interrupted\n"


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
