"""`edgevlm eval` end to end, as a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from edgevlm.demo.questions import heldout_set, is_correct

EDGEVLM = str(Path(sys.executable).parent / "edgevlm")


def edgevlm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEVLM, *args], capture_output=True, text=True, timeout=600)


def test_eval_on_the_demo_model_reports_what_its_answers_score(demo_model_dir: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "eval.json"
    result = edgevlm("eval", "--limit", "20", "--batch-size", "8", "--report", str(report_path))
    assert result.returncode == 0, result.stderr
    assert "model: 20/20" in result.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["backends"]["model"]["source"] == str(demo_model_dir)
    questions = report["questions"]
    assert [q["index"] for q in questions] == list(range(20))
    # Recompute every verdict from the answers in the report, independently of the report's tallies.
    samples = heldout_set(600)
    verdicts = [is_correct(samples[q["index"]], q["answers"]["model"]) for q in questions]
    scores = report["backends"]["model"]["scores"]
    assert scores["overall"]["correct"] == sum(verdicts)
    assert scores["overall"]["accuracy"] == pytest.approx(sum(verdicts) / 20)
    by_type = Counter(samples[q["index"]].qtype for q, right in zip(questions, verdicts, strict=True) if right)
    assert {k: v["correct"] for k, v in scores["by_type"].items()} == {k: by_type[k] for k in scores["by_type"]}
    overall = re.search(r"^overall\s+(\d+)/20\s+([\d.]+)%$", result.stdout, re.MULTILINE)
    assert overall is not None, result.stdout
    assert int(overall.group(1)) == sum(verdicts)
    assert float(overall.group(2)) == pytest.approx(100 * sum(verdicts) / 20, abs=0.05)
    assert f"report: {report_path}" in result.stdout


@pytest.mark.slow
def test_eval_of_model_and_bundle_reports_their_agreement(
    demo_model_dir: Path, demo_bundle: Path, tmp_path: Path
) -> None:
    report_path = tmp_path / "eval.json"
    result = edgevlm(
        "eval",
        "--bundle",
        str(demo_bundle),
        "--model",
        str(demo_model_dir),
        "--limit",
        "20",
        "--report",
        str(report_path),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert set(report["backends"]) == {"model", "bundle"}
    questions = report["questions"]
    same = sum(q["answers"]["model"] == q["answers"]["bundle"] for q in questions) / len(questions)
    assert report["agreement"] == {"model_vs_bundle": pytest.approx(same)}
    assert f"agreement model vs bundle: {same:.1%} identical answers" in result.stdout
    # The export's parity gate holds logits to fp32 tolerance, so greedy answers should match.
    assert same >= 0.9, [(q["answers"]["model"], q["answers"]["bundle"]) for q in questions]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{tmp}/missing"], "model folder not found"),
        (["--model", "{tmp}"], "no config.json"),
        (["--model", "{tmp}/llama"], "not a glm4v checkpoint"),
        (["--bundle", "{tmp}/missing"], "bundle folder not found"),
        (["--limit", "0"], "limit must be in [1, 600]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    result = edgevlm("eval", *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("edgevlm eval: error: ") and message in result.stderr
