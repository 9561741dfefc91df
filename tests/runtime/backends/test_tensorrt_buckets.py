"""Decode buckets for CUDA graphs and vision splitting, checked on the CPU: the padding rule with the
demo decoder's math in torch, and with the real exported graphs through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edgevlm.runtime.attention_bias import attention_bias
from edgevlm.runtime.backends.base import VisionBatch
from edgevlm.runtime.backends.trt_buckets import DecodeBuckets, ladder, pad_decode
from edgevlm.runtime.backends.trt_vision_chunks import chunk_bounds, frame_starts, split_vision_batch
from edgevlm.runtime.vision_inputs import frame_attention_bias, vision_inputs


def test_ladder_and_pick() -> None:
    assert ladder(16) == (1, 2, 4, 8, 16)
    assert ladder(12) == (1, 2, 4, 8, 12)
    assert ladder(2048, 256) == (256, 512, 1024, 2048)
    buckets = DecodeBuckets.for_cache(rows=6, max_len=1000)
    assert buckets.batch == (1, 2, 4, 6)
    assert buckets.total == (256, 512, 1000)
    assert buckets.pick(3, 257) == (4, 512)
    assert buckets.pick(6, 1000) == (6, 1000)
    assert buckets.pick(7, 10) is None
    assert len(buckets) == 12
    assert DecodeBuckets.for_cache(rows=2, max_len=100).total == (100,)


def decode_step(rows: int, lengths: list[int], hidden: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts = np.array(lengths, np.int64)
    bias = attention_bias(starts, np.ones(rows, np.int64), seq=1)
    embeds = np.random.default_rng(0).standard_normal((rows, 1, hidden)).astype(np.float16)
    positions = np.broadcast_to(starts[None, :, None], (3, rows, 1)).copy()
    return embeds, positions, bias


def test_pad_decode_moves_the_new_token_to_the_last_column() -> None:
    embeds, positions, bias = decode_step(3, [5, 2, 7])
    padded = pad_decode(embeds, positions, bias, batch=4, total=16)
    assert padded.inputs_embeds.shape == (4, 1, 8)
    np.testing.assert_array_equal(padded.inputs_embeds[:3], embeds)
    assert not padded.inputs_embeds[3].any()
    np.testing.assert_array_equal(padded.position_ids[:, :3], positions)
    visible = np.isfinite(padded.attention_bias[:, 0, 0])
    expected = np.zeros((4, 16), bool)
    for row, length in enumerate([5, 2, 7]):
        expected[row, :length] = True
    expected[:, 15] = True  # each row's own new token; the padding row sees only that
    np.testing.assert_array_equal(visible, expected)
    assert padded.logits_index.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="does not fit bucket"):
        pad_decode(embeds, positions, bias, batch=2, total=16)


def test_padded_bucket_gives_the_unpadded_logits_with_the_demo_decoder_math() -> None:
    """The bucket rule with real attention: torch on the CPU, float32, random weights."""
    torch = pytest.importorskip("torch")
    from edgevlm.bench.gpu_check import TorchDecoder, demo_dims
    from edgevlm.runtime.backends.trt_kv_cache import DeviceKVCache
    from edgevlm.runtime.kv_cache import KVLayout

    dims = demo_dims()
    model = TorchDecoder(dims, "cpu", torch.float32)
    cache = DeviceKVCache(KVLayout(dims.layers, 8, dims.kv_heads, 64, dims.head_dim, np.dtype(np.float32)),
                          torch.float32, "cpu")
    cache.storage.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    rows, lengths = 3, [20, 9, 33]
    embeds, positions, bias = decode_step(rows, lengths, dims.hidden)
    embeds = embeds.astype(np.float32)
    past = bias.shape[-1] - 1

    def run(e: np.ndarray, b: np.ndarray) -> tuple:
        batch = e.shape[0]
        presents = torch.zeros(dims.layers, 2, batch, dims.kv_heads, 1, dims.head_dim)
        logits = torch.zeros(batch, dims.vocab)
        model.step(torch.from_numpy(e), torch.from_numpy(b), cache.storage, presents, logits)
        return logits, presents

    logits, presents = run(embeds, bias)
    bucket = DecodeBuckets.for_cache(8, 64, min_total=16).pick(rows, past + 1)
    assert bucket == (4, 64)
    padded = pad_decode(embeds, positions, bias, *bucket)
    padded_logits, padded_presents = run(padded.inputs_embeds, padded.attention_bias)
    torch.testing.assert_close(padded_logits[:rows], logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded_presents[:, :, :rows], presents, rtol=1e-5, atol=1e-5)


def test_padded_bucket_matches_with_the_exported_decoder(bundle_dir) -> None:
    """The same rule on the real decoder.onnx (ONNX Runtime, CPU): the graph appends the new token
    after the `t - 1` cache positions it reads."""
    import onnxruntime as ort

    from edgevlm.runtime.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    arch = bundle.architecture
    session = ort.InferenceSession(str(bundle.decoder_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    rows, lengths, max_len = 2, [11, 4], 40
    cache = (rng.standard_normal((arch.num_layers, 2, 4, arch.num_kv_heads, max_len, arch.head_dim)) * 0.5)
    cache = cache.astype(bundle.dtype)
    embeds, positions, bias = decode_step(rows, lengths, arch.hidden_size)
    embeds = embeds.astype(bundle.dtype)

    def run(e: np.ndarray, p: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
        feeds = {"inputs_embeds": e, "position_ids": p, "attention_bias": b,
                 "logits_index": np.zeros(e.shape[0], np.int64)}
        for i in range(arch.num_layers):
            feeds[f"past_key_{i}"] = cache[i, 0, : e.shape[0]]
            feeds[f"past_value_{i}"] = cache[i, 1, : e.shape[0]]
        return session.run(None, feeds)

    plain = run(embeds, positions, bias)
    padded = pad_decode(embeds, positions, bias, batch=4, total=32)
    bucketed = run(padded.inputs_embeds, padded.position_ids, padded.attention_bias)
    np.testing.assert_allclose(bucketed[0][:rows], plain[0], rtol=1e-3, atol=1e-3)
    for new, old in zip(bucketed[1:], plain[1:], strict=True):
        np.testing.assert_allclose(new[:rows].astype(np.float32), old.astype(np.float32), rtol=1e-3, atol=1e-3)


# -- vision splitting ------------------------------------------------------------------------------
def test_frame_starts_from_the_block_diagonal_bias() -> None:
    grids = np.array([[1, 4, 4], [2, 2, 4], [1, 2, 2]])
    assert frame_starts(frame_attention_bias(grids)) == [0, 16, 24, 32]
    assert frame_starts(np.zeros((0, 0), np.float32)) == []


def test_chunk_bounds_pack_whole_frames() -> None:
    assert chunk_bounds([0, 16, 24, 32], 36, max_patches=24) == [(0, 24), (24, 36)]
    assert chunk_bounds([0, 16, 24, 32], 36, max_patches=100) == [(0, 36)]
    with pytest.raises(ValueError, match="frame of 16 patches exceeds the vision engine's 8"):
        chunk_bounds([0, 16], 20, max_patches=8)


def test_split_vision_batch_parts_concatenate_to_the_whole() -> None:
    grids = np.array([[1, 4, 4], [1, 2, 4], [1, 4, 2]])
    inputs = vision_inputs(grids, merge=2)
    pixels = np.arange(32 * 6, dtype=np.float32).reshape(32, 6)
    batch = VisionBatch(pixels, inputs.pos_grid, inputs.rotary_pos, inputs.attention_bias)
    assert split_vision_batch(batch, 64) == [batch]
    parts = split_vision_batch(batch, 20)
    assert [p.pixel_values.shape[0] for p in parts] == [16, 16]
    np.testing.assert_array_equal(np.concatenate([p.pixel_values for p in parts]), pixels)
    np.testing.assert_array_equal(parts[1].attention_bias, frame_attention_bias(grids[1:]))


def test_split_vision_batch_matches_one_call_with_the_exported_vision_graph(bundle_dir) -> None:
    import onnxruntime as ort

    from edgevlm.runtime.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    session = ort.InferenceSession(str(bundle.vision_file), providers=["CPUExecutionProvider"])
    vision = bundle.architecture.vision
    grids = np.array([[1, 4, 6], [1, 6, 4], [1, 2, 2]])
    inputs = vision_inputs(grids, vision.spatial_merge_size)
    pixels = np.random.default_rng(0).standard_normal((int(grids.prod(1).sum()), vision.patch_dim))
    batch = VisionBatch(pixels.astype(bundle.dtype), inputs.pos_grid, inputs.rotary_pos, inputs.attention_bias)

    def run(b: VisionBatch) -> np.ndarray:
        feeds = {"pixel_values": b.pixel_values, "pos_grid": b.pos_grid, "rotary_pos": b.rotary_pos,
                 "attention_bias": b.attention_bias}
        return session.run(["image_embeds"], feeds)[0]

    whole = run(batch)
    parts = np.concatenate([run(part) for part in split_vision_batch(batch, 30)])
    np.testing.assert_allclose(parts, whole, rtol=1e-4, atol=1e-4)
