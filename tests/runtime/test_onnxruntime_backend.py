"""Execution-provider choice (pure), and that the decoder's cache rows are bound in place."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.runtime.backends.onnxruntime import select_providers

CPU = "CPUExecutionProvider"
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]


def test_cpu_only_by_default_and_when_asked() -> None:
    assert select_providers("cpu", GPU) == [CPU]
    assert select_providers("auto", [CPU]) == [CPU]


def test_gpu_providers_chosen_when_present() -> None:
    assert select_providers("auto", GPU) == GPU
    assert select_providers("cuda", GPU) == ["CUDAExecutionProvider", CPU]
    assert select_providers("tensorrt", GPU) == GPU


def test_missing_gpu_provider_is_an_error() -> None:
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        select_providers("cuda", [CPU])
    with pytest.raises(ValueError, match="device"):
        select_providers("tpu", [CPU])


def test_the_cpu_form_is_loaded_on_the_cpu_provider_alone(tmp_path) -> None:
    from dataclasses import replace

    from edgevlm.runtime.backends.onnxruntime import graph_files
    from edgevlm.runtime.bundle import Bundle

    bundle = Bundle(tmp_path, np.dtype(np.float32), None, None, None,  # type: ignore[arg-type]
                    tmp_path / "vision.onnx", tmp_path / "decoder.onnx", {})
    assert graph_files(bundle, [CPU])["decoder"].name == "decoder.onnx"
    with_cpu = replace(bundle, decoder_cpu_file=bundle.path / "decoder.cpu.onnx")
    assert graph_files(with_cpu, [CPU]) == {"vision": bundle.vision_file, "decoder": bundle.path / "decoder.cpu.onnx"}
    assert graph_files(with_cpu, GPU)["decoder"].name == "decoder.onnx"  # TensorRT/CUDA take the Q/DQ form


@pytest.mark.parametrize("spin", [True, False])
def test_spinning_follows_the_engine_limit(bundle_dir, spin: bool) -> None:
    from edgevlm.runtime.engine import Engine

    engine = Engine.from_bundle(bundle_dir, max_batch=1, spin_wait=spin)
    try:
        assert _spinning(engine.backend.decoder) == spin
        assert not _spinning(engine.backend.vision)  # never: it would take a core from the next decoder step
    finally:
        engine.close()


def test_the_server_engine_does_not_spin_unless_asked(bundle_dir) -> None:
    import argparse

    from edgevlm.server.cli import register
    from edgevlm.server.engine import bundle_engine_factory

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["serve"]).ort_spin is False
    assert parser.parse_args(["serve", "--ort-spin"]).ort_spin is True
    engine = bundle_engine_factory(bundle_dir, max_queue=None, kv_cache_mb=None)().engine  # type: ignore[attr-defined]
    try:
        assert not _spinning(engine.backend.decoder)
    finally:
        engine.close()


def _spinning(session) -> bool:
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except RuntimeError:  # unset: ONNX Runtime's default, which spins
        return True
