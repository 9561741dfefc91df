"""The parity gate: passes on the exported bundle, fails on a damaged one, and its verdict rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevlm.demo.hf_compat import load_processor
from edgevlm.export.parity import (
    GREEDY_TOKENS,
    Outputs,
    ParityError,
    check_parity,
    compare,
    onnx_candidate,
    parity_inputs,
    torch_reference,
)


@pytest.fixture(scope="module")
def reference(hf_model: Any, bundle_dir: Path) -> tuple[Any, Outputs]:
    inputs = parity_inputs(load_processor(bundle_dir), seed=11)
    return inputs, torch_reference(hf_model, inputs)


def test_the_bundle_passes_on_another_case(reference: tuple[Any, Outputs], bundle_dir: Path,
                                           manifest: dict[str, Any]) -> None:
    inputs, ref = reference
    assert len(ref.tokens) == GREEDY_TOKENS and inputs.image_grid_thw.shape == (1, 3)
    report = compare(ref, onnx_candidate(bundle_dir, manifest, inputs, ref.tokens), "fp32", 0.0)
    check_parity(report)
    assert report.greedy_identical and report.logits_max_rel < 1e-5


def test_a_damaged_weight_fails_the_gate(reference: tuple[Any, Outputs], bundle_dir: Path,
                                         manifest: dict[str, Any], tmp_path: Path) -> None:
    damaged = Path(shutil.copytree(bundle_dir, tmp_path / "damaged"))
    data = np.fromfile(damaged / "decoder.onnx.data", dtype=np.float32)
    data[: len(data) // 2] *= 1.01  # a 1% scale error in half of the decoder's weights
    data.tofile(damaged / "decoder.onnx.data")
    inputs, ref = reference
    report = compare(ref, onnx_candidate(damaged, manifest, inputs, ref.tokens), "fp32", 0.0)
    with pytest.raises(ParityError, match="logits rel error"):
        check_parity(report)


def _outputs(logits: list[list[float]]) -> Outputs:
    array = np.array(logits, np.float32)
    return Outputs(np.zeros((1, 2), np.float32), array, array.argmax(-1))


def test_near_ties_are_forgiven_only_below_fp32() -> None:
    reference = _outputs([[10.0, 9.9995, 0.0], [0.0, 10.0, 1.0]])
    candidate = _outputs([[10.0, 10.0005, 0.0], [0.0, 10.0, 1.0]])  # flips a 5e-4 margin
    fp16 = compare(reference, candidate, "fp16", 0.0)
    assert (fp16.greedy_matched, fp16.near_ties, fp16.failures()) == (1, 1, [])
    fp32 = compare(reference, candidate, "fp32", 0.0)
    assert fp32.near_ties == 0
    assert "1 of 2 greedy tokens differ" in " ".join(fp32.failures())


def test_a_real_disagreement_fails_any_dtype() -> None:
    reference = _outputs([[10.0, 5.0]])
    candidate = _outputs([[5.0, 10.0]])
    report = compare(reference, candidate, "fp16", 0.0)
    assert report.near_ties == 0 and len(report.failures()) == 2  # logits and greedy
    assert json.dumps(report.as_manifest())  # serialisable
