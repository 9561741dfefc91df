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
def test_spinning_follows_the_engine_limit_and_stops_with_each_call(bundle_dir, spin: bool) -> None:
    from edgevlm.runtime.engine import Engine

    engine = Engine.from_bundle(bundle_dir, max_batch=1, spin_wait=spin)
    try:
        assert _spinning(engine.backend.decoder) == spin
        # spinning or not, a decoder's workers stop when its run returns (the vision call, the
        # sampler and the server get both cores between steps)
        options = engine.backend.decoder.get_session_options()
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert _spinning(engine.backend.vision) == spin
        vision = engine.backend.vision.get_session_options()
        assert vision.get_session_config_entry("session.force_spinning_stop") == "1"
    finally:
        engine.close()


@pytest.mark.parametrize(("argv", "spin"), [([], True), (["--no-ort-spin"], False), (["--ort-spin"], True)])
def test_the_server_engine_spins_unless_told_not_to(bundle_dir, argv: list[str], spin: bool) -> None:
    import argparse

    from edgevlm.server.cli import register
    from edgevlm.server.engine import bundle_engine_factory

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", *argv])
    assert args.ort_spin is spin
    factory = bundle_engine_factory(bundle_dir, max_queue=None, kv_cache_mb=None, spin_wait=args.ort_spin)
    engine = factory().engine  # type: ignore[attr-defined]
    try:
        assert _spinning(engine.backend.decoder) is spin
        assert _spinning(engine.backend.vision) is spin
    finally:
        engine.close()


@pytest.mark.parametrize("threads", [None, 1])
def test_the_server_engine_takes_its_thread_count(bundle_dir, threads: int | None) -> None:
    from edgevlm.server.engine import bundle_engine_factory

    engine = bundle_engine_factory(bundle_dir, max_queue=None, kv_cache_mb=None, threads=threads)().engine  # type: ignore[attr-defined]
    try:
        for session in (engine.backend.decoder, engine.backend.vision):
            assert session.get_session_options().intra_op_num_threads == (threads or 0)
    finally:
        engine.close()


def _spinning(session) -> bool:
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except RuntimeError:  # unset: ONNX Runtime's default, which spins
        return True


def _step(table: np.ndarray, rows: list[list[int]], starts: list[int], first_row: int = 0):
    """A DecoderStep of `rows` new tokens after `starts` cached ones (positions 1-D, as for text)."""
    from edgevlm.runtime.backends.base import DecoderStep

    seq = max(len(r) for r in rows)
    ids = np.zeros((len(rows), seq), np.int64)
    positions = np.zeros((3, len(rows), seq), np.int64)
    for b, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[b, : len(row)] = row
        positions[:, b, : len(row)] = np.arange(start, start + len(row))
    counts = np.array([len(r) for r in rows], np.int64)
    starts_array = np.array(starts, np.int64)
    return DecoderStep(table[ids], positions, counts - 1,
                       first_row, starts_array, counts)


def test_the_in_place_cpu_form_matches_the_portable_form(bundle_dir) -> None:
    """fp32 bundles carry decoder.cpu.onnx (GroupQueryAttention writing the bound cache rows
    itself). Through the same steps, padded batched prefill, a chunk after cached tokens in a batch
    (which the backend runs row by row) and decode at mixed lengths, its logits and cache equal those
    of decoder.onnx + KVCache.write_all."""
    from edgevlm.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edgevlm.runtime.bundle import load_bundle
    from edgevlm.runtime.kv_cache import KVCache, KVLayout

    bundle = load_bundle(bundle_dir)
    assert bundle.decoder_cpu_file is not None and bundle.decoder_cpu_file.name == "decoder.cpu.onnx"
    arch = bundle.architecture
    table = np.load(bundle_dir / "embed_tokens.npy")
    layout = KVLayout(arch.num_layers, 3, arch.num_kv_heads, 64, arch.head_dim, np.dtype(np.float32))
    runs = {}
    for cpu_form in (True, False):
        backend = OnnxRuntimeBackend(bundle, max_rows=3, cpu_form=cpu_form)
        assert backend.in_place is cpu_form
        cache = KVCache(layout)
        rng = np.random.default_rng(5)
        lengths = np.zeros(3, np.int64)
        logits = []
        for new in ([7, 3, 5], [4, 6, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]):
            step = _step(table, [rng.integers(20, arch.vocab_size, n).tolist() for n in new], lengths.tolist())
            logits.append(backend.decode(step, cache).copy())
            lengths += new
        runs[cpu_form] = (logits, cache)
        backend.close()
    for in_place, portable in zip(runs[True][0], runs[False][0], strict=True):
        np.testing.assert_allclose(in_place, portable, rtol=1e-4, atol=1e-4)
        assert (in_place.argmax(-1) == portable.argmax(-1)).all()
    for layer in range(arch.num_layers):
        for b, length in enumerate(lengths.tolist()):
            for kind in ("keys", "values"):
                np.testing.assert_allclose(getattr(runs[True][1], kind)[layer][b, :, :length],
                                           getattr(runs[False][1], kind)[layer][b, :, :length], rtol=1e-5, atol=1e-5)


def test_the_vision_cpu_form_runs_a_packed_batch_block_by_block(bundle_dir) -> None:
    """vision.cpu.onnx takes one attention block per call; the backend splits a packed batch (three
    images, one of them two frames) at its blocks and gives what vision.onnx gives in one call."""
    from edgevlm.runtime.backends.base import VisionBatch
    from edgevlm.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edgevlm.runtime.bundle import load_bundle
    from edgevlm.runtime.vision_inputs import vision_inputs

    bundle = load_bundle(bundle_dir)
    thw = np.array([[1, 8, 6], [2, 4, 4], [1, 2, 2]])
    inputs = vision_inputs(thw, bundle.architecture.vision.spatial_merge_size)
    pixels = np.random.default_rng(2).standard_normal((int(thw.prod(1).sum()), 1176), dtype=np.float32)
    batch = VisionBatch(pixels, inputs.pos_grid, inputs.rotary_pos, inputs.attention_bias)
    embeds = {}
    for cpu_form in (True, False):
        backend = OnnxRuntimeBackend(bundle, cpu_form=cpu_form)
        assert backend.vision_per_block is cpu_form
        embeds[cpu_form] = backend.encode_images(batch)
        backend.close()
    assert embeds[True].shape == (int(thw.prod(1).sum()) // 4, bundle.architecture.hidden_size)
    np.testing.assert_allclose(embeds[True], embeds[False], rtol=1e-4, atol=1e-5)
