"""`edgevlm doctor`: a report that says what is missing; non-zero only when --tensorrt cannot run."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from edgevlm.cli import main
from edgevlm.runtime.backends.trt_preflight import GpuFacts, backend_problems
from edgevlm.runtime.doctor import Environment, format_backends, format_environment, run_doctor

JETSON = Environment(
    facts=GpuFacts(cuda_devices=1, tensorrt="10.3.0.30", torch="2.5.0a0", torch_cuda=True, onnxruntime="1.20.0",
                   ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider")),
    python="3.10.12",
    machine="Linux aarch64",
    edgevlm="0.1.0",
    numpy="1.26.4",
    jetson="R36 (release), REVISION: 3.0",
    gpus=("Orin (sm_87, 62841 MB)",),
)


def test_environment_lines() -> None:
    lines = format_environment(JETSON)
    assert "  jetson       R36 (release), REVISION: 3.0" in lines
    assert "  tensorrt     10.3.0.30" in lines
    assert "  GPU          Orin (sm_87, 62841 MB)" in lines
    bare = replace(JETSON, facts=replace(JETSON.facts, tensorrt=None, torch="2.5.0+cpu", torch_cuda=False,
                                         cuda_devices=0), gpus=(), jetson=None)
    lines = format_environment(bare)
    assert "  tensorrt     not installed" in lines
    assert "  torch        2.5.0+cpu (CPU-only build)" in lines
    assert "  GPU          none visible to the CUDA driver" in lines


def test_backend_lines() -> None:
    lines = format_backends(JETSON.facts)
    assert [line.split()[-1] for line in lines] == ["ready", "ready", "ready"]
    lines = format_backends(replace(JETSON.facts, tensorrt=None))
    assert lines[2].startswith("  tensorrt")
    assert "unavailable: the tensorrt Python package is missing" in lines[2]


def test_report_here_exits_0() -> None:
    out = io.StringIO()
    assert run_doctor(tensorrt=False, bundle=None, limit=600, out=out) == 0
    text = out.getvalue()
    assert text.startswith("edgevlm doctor\n")
    for label in ("edgevlm", "onnxruntime", "torch", "tensorrt", "GPU", "backends:"):
        assert label in text
    assert "onnxruntime --device cpu     ready" in text


def test_tensorrt_self_test_without_tensorrt_says_why_and_exits_1() -> None:
    from edgevlm.runtime.backends.trt_preflight import probe

    problems = backend_problems("tensorrt", "cuda", probe())
    if not problems:
        pytest.skip("TensorRT and a GPU are present: the self-test would run (see test_tensorrt_gpu.py)")
    out = io.StringIO()
    assert run_doctor(tensorrt=True, bundle=None, limit=600, out=out) == 1
    last = out.getvalue().splitlines()[-1]
    assert last == "tensorrt self-test: cannot run here: " + "; ".join(problems)


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: edgevlm doctor")
    assert "--tensorrt" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "0"], "--limit must be in [1, 600], got 0"),
        (["--bundle", "{tmp}"], "not an edgevlm bundle (no manifest.json): {tmp}"),
    ],
)
def test_cli_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", *(a.format(tmp=tmp_path) for a in args)]) == 2
    assert capsys.readouterr().err == f"edgevlm doctor: error: {message.format(tmp=tmp_path)}\n"


def test_self_test_verdicts() -> None:
    from edgevlm.runtime.backends.trt_selftest import DecodeSpeed, SelfTestResult, format_result

    speed = DecodeSpeed(batch=8, past=512, tokens_per_s=800.0, ceiling_tokens_per_s=2000.0, bandwidth_bytes_per_s=3e12)
    good = SelfTestResult(600, 0.995, 0.99, 10.0, 30.0, speed)
    assert good.passed
    lines = format_result(good)
    assert lines[0] == "answers: 99.5% identical to ONNX Runtime CPU over 600 questions: ok (needs >= 99%)"
    assert lines[2].endswith("(3000 GB/s measured copy bandwidth): 40% of the bound")
    bad = replace(good, agreement=0.98)
    assert not bad.passed
    assert format_result(bad)[0].endswith("FAIL (needs >= 99%)")
    quantized = replace(bad, threshold=None)
    assert quantized.passed
    assert format_result(quantized)[0].endswith("reported only (quantized bundle)")
