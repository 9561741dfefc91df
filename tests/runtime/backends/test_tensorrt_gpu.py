"""On a machine with TensorRT, torch with CUDA and an NVIDIA GPU: build the demo bundle's engines and
check the TensorRT backend against ONNX Runtime on the CPU. Skipped elsewhere, with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgevlm.runtime.backends.trt_preflight import probe

FACTS = probe()
MISSING = [
    what
    for what, absent in (("a CUDA GPU", FACTS.cuda_devices == 0), ("tensorrt", FACTS.tensorrt is None),
                         ("torch with CUDA", not FACTS.torch_cuda))
    if absent
]
pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(bool(MISSING), reason="needs TensorRT on a GPU; missing here: " + ", ".join(MISSING)),
]

ROWS, MAX_LEN, CHUNK = 4, 256, 64


@pytest.fixture(scope="module")
def trt_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's demo bundle seen through symlinks, with engines built into its engines/ folder
    (the shared bundle folder itself stays untouched)."""
    from edgevlm.export.tensorrt_build import BuildRequest, build_engines, plan_build

    root = tmp_path_factory.mktemp("trt") / "bundle"
    root.mkdir()
    for path in bundle_dir.iterdir():
        (root / path.name).symlink_to(path)
    plan = plan_build(BuildRequest(root, max_batch=ROWS, max_seq_len=MAX_LEN, prefill_chunk=CHUNK, opt_batch=2))
    build_engines(plan, print)
    return root


@pytest.fixture(scope="module")
def backends(trt_bundle: Path) -> Any:
    from edgevlm.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edgevlm.runtime.backends.tensorrt import TensorRTBackend
    from edgevlm.runtime.bundle import load_bundle

    bundle = load_bundle(trt_bundle)
    trt = TensorRTBackend(bundle, device="cuda", max_step_tokens=CHUNK, max_rows=ROWS)
    ort = OnnxRuntimeBackend(bundle, device="cpu", max_step_tokens=CHUNK, max_rows=ROWS)
    yield bundle, trt, ort
    trt.close()


def test_engine_manifest_names_release_gpu_and_profiles(trt_bundle: Path) -> None:
    import tensorrt
    import torch

    data = json.loads((trt_bundle / "engines" / "manifest.json").read_text())
    props = torch.cuda.get_device_properties(0)
    assert data["target"] == {"tensorrt_version": tensorrt.__version__, "gpu_name": props.name,
                              "compute_capability": [props.major, props.minor]}
    assert data["build"]["builder_flags"] == []
    assert [p["name"] for p in data["engines"]["decoder"]["profiles"]] == ["prefill", "decode"]
    assert data["limits"]["max_seq_len"] == MAX_LEN


def step(bundle: Any, first_row: int, starts: list[int], counts: list[int], seed: int) -> Any:
    from edgevlm.runtime.backends.base import DecoderStep

    rng = np.random.default_rng(seed)
    batch, seq = len(starts), max(counts)
    s, c = np.array(starts, np.int64), np.array(counts, np.int64)
    positions = (s[:, None] + np.arange(seq)[None]).astype(np.int64)
    return DecoderStep(
        inputs_embeds=(rng.standard_normal((batch, seq, bundle.architecture.hidden_size)) * 0.1).astype(bundle.dtype),
        position_ids=np.broadcast_to(positions[None], (3, batch, seq)).copy(),
        logits_index=c - 1,
        first_row=first_row,
        starts=s,
        counts=c,
    )


def assert_caches_match(host: Any, device: Any) -> None:
    for layer in range(host.layout.num_layers):
        np.testing.assert_allclose(device.keys[layer].cpu().numpy().astype(np.float32),
                                   host.keys[layer].astype(np.float32), rtol=2e-2, atol=2e-2)
        np.testing.assert_allclose(device.values[layer].cpu().numpy().astype(np.float32),
                                   host.values[layer].astype(np.float32), rtol=2e-2, atol=2e-2)


def test_prefill_decode_and_moves_match_onnxruntime(backends: Any) -> None:
    from edgevlm.runtime.kv_cache import KVCache, KVLayout, RowMove

    bundle, trt, ort = backends
    arch = bundle.architecture
    layout = KVLayout(arch.num_layers, ROWS, arch.num_kv_heads, MAX_LEN, arch.head_dim, bundle.dtype)
    host, device = KVCache(layout), trt.create_cache(layout)
    assert device.layout.rows == ROWS
    # Prefill steps stay within CHUNK padded tokens (rows x longest chunk), like the scheduler's.
    steps = [
        step(bundle, 0, [0, 0], [30, 17], 0),  # two prefill chunks, the second padded
        step(bundle, 2, [0], [64], 1),  # a full chunk on row 2
        step(bundle, 0, [30, 17, 64], [1, 1, 1], 2),  # decode: CUDA graph of bucket (4, 256)
        step(bundle, 0, [31, 18, 65], [1, 1, 1], 3),
        step(bundle, 1, [19, 66], [1, 1], 4),  # decode rows not from row 0: eager
    ]
    for s in steps:
        expected = ort.decode(s, host).copy()
        got = trt.decode(s, device)
        np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)
        assert (got.argmax(-1) == expected.argmax(-1)).all()
    assert len(trt.graphs) >= 1
    moves = [RowMove(0, ROWS, 32), RowMove(2, 0, 67), RowMove(ROWS, 2, 32)]
    host.apply(moves)
    device.apply(moves)
    assert_caches_match(host, device)


def test_graph_replay_equals_eager(backends: Any) -> None:
    from edgevlm.runtime.kv_cache import KVLayout

    bundle, trt, _ = backends
    arch = bundle.architecture
    cache = trt.create_cache(KVLayout(arch.num_layers, ROWS, arch.num_kv_heads, MAX_LEN, arch.head_dim,
                                      bundle.dtype))
    cache.storage.normal_(0, 0.5)
    s = step(bundle, 0, [30, 5], [1, 1], 4)
    graphed = trt.decode(s, cache).copy()
    trt.buckets, buckets = None, trt.buckets  # the same step, eagerly
    try:
        eager = trt.decode(s, cache).copy()
    finally:
        trt.buckets = buckets
    np.testing.assert_allclose(graphed, eager, rtol=1e-2, atol=1e-2)


def test_vision_matches_onnxruntime_and_splits_large_calls(backends: Any) -> None:
    from edgevlm.runtime.backends.base import VisionBatch
    from edgevlm.runtime.vision_inputs import vision_inputs

    bundle, trt, ort = backends
    vision = bundle.architecture.vision
    largest = trt.max_patches
    grids = np.array([[1, 2, largest // 2], [1, 2, largest // 2]])  # two largest images: one split
    inputs = vision_inputs(grids, vision.spatial_merge_size)
    pixels = np.random.default_rng(0).standard_normal((int(grids.prod(1).sum()), vision.patch_dim))
    batch = VisionBatch(pixels.astype(bundle.dtype), inputs.pos_grid, inputs.rotary_pos, inputs.attention_bias)
    np.testing.assert_allclose(trt.encode_images(batch).astype(np.float32),
                               ort.encode_images(batch).astype(np.float32), rtol=2e-2, atol=2e-2)


def test_engines_from_another_tensorrt_release_must_rebuild(trt_bundle: Path, tmp_path: Path) -> None:
    from edgevlm.runtime.backends.tensorrt import TensorRTBackend
    from edgevlm.runtime.backends.trt_compat import EngineIncompatible
    from edgevlm.runtime.bundle import load_bundle

    engines = tmp_path / "engines"
    shutil.copytree(trt_bundle / "engines", engines)
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["target"]["tensorrt_version"] = "9.0.0"
    (engines / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineIncompatible, match="this machine has .*: rebuild them with `edgevlm build-engine"):
        TensorRTBackend(load_bundle(trt_bundle), device="cuda", max_step_tokens=CHUNK, max_rows=ROWS,
                        engine_dir=engines)


def test_engine_answers_like_onnxruntime(trt_bundle: Path) -> None:
    """The whole runtime on TensorRT: the demo questions answered like ONNX Runtime on the CPU."""
    from edgevlm.demo.evaluate import EvalConfig, agreement
    from edgevlm.runtime.backends import BACKENDS
    from edgevlm.runtime.backends.trt_kv_cache import DeviceKVCache
    from edgevlm.runtime.demo_answers import answer_batch
    from edgevlm.runtime.engine import Engine

    if "tensorrt" not in BACKENDS:
        pytest.skip("edgevlm.runtime.backends.create_backend does not offer 'tensorrt' yet")
    limits = {"max_batch": ROWS, "max_seq_len": MAX_LEN, "max_prefill_tokens": CHUNK}
    samples = EvalConfig(limit=40).samples()
    engine = Engine.from_bundle(trt_bundle, backend="tensorrt", device="cuda", **limits)
    if not isinstance(engine.cache, DeviceKVCache):
        pytest.skip("edgevlm.runtime.engine does not create its KV cache with backend.create_cache yet")
    trt_answers = answer_batch(engine, samples)
    engine.close()
    ort_answers = answer_batch(Engine.from_bundle(trt_bundle, backend="onnxruntime", device="cpu", **limits),
                               samples)
    assert agreement(trt_answers, ort_answers) >= 0.95
