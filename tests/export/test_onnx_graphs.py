"""The written graphs in real ONNX Runtime sessions, at shapes other than the traced ones, each in
both forms (the portable graph and its CPU form): vision over many image sizes and several images
per call, the decoder over batch 1 and 3, chunked prefill and mixed-length batches through the KV
interface (the CPU form with its present outputs bound to the past memory, as the runtime runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgevlm.runtime.vision_inputs import attention_blocks, vision_inputs

GRIDS = [[[1, 2, 2]], [[1, 8, 14]], [[1, 30, 12]], [[1, 20, 12], [1, 4, 4], [1, 6, 10]]]
FORMS = {"portable": "{graph}.onnx", "cpu-form": "{graph}.cpu.onnx"}


@pytest.fixture(scope="module", params=list(FORMS))
def vision_session(bundle_dir: Path, request: pytest.FixtureRequest) -> ort.InferenceSession:
    path = bundle_dir / FORMS[request.param].format(graph="vision")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=list(FORMS))
def decoder_session(bundle_dir: Path, request: pytest.FixtureRequest) -> ort.InferenceSession:
    path = bundle_dir / FORMS[request.param].format(graph="decoder")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# Video frames (t > 1) are compared between the forms in tests/runtime/test_onnxruntime_backend.py:
# HF's own position embedding indexes image_shapes per frame and fails on them.
@pytest.mark.parametrize("grid", GRIDS, ids=["1-token", "non-square", "tall", "three-images"])
def test_vision_any_size_and_count(vision_session: ort.InferenceSession, hf_model: Any, grid: list) -> None:
    thw = np.array(grid)
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((int(thw.prod(1).sum()), 1176), dtype=np.float32)
    inputs = vision_inputs(thw, 2)
    feeds = {"pixel_values": pixels, "pos_grid": inputs.pos_grid, "rotary_pos": inputs.rotary_pos}
    if "attention_bias" in {i.name for i in vision_session.get_inputs()}:
        (embeds,) = vision_session.run(None, {**feeds, "attention_bias": inputs.attention_bias})
    else:  # the CPU form: one attention block (image or frame) per call
        blocks = attention_blocks(inputs.attention_bias)
        assert len(blocks) == int(thw[:, 0].sum())
        embeds = np.concatenate([vision_session.run(None, {k: v[lo:hi] for k, v in feeds.items()})[0]
                                 for lo, hi in blocks])
    with torch.no_grad():
        expected = torch.cat(hf_model.model.get_image_features(torch.from_numpy(pixels),
                                                                torch.from_numpy(thw)).pooler_output).numpy()
    assert embeds.shape == expected.shape
    np.testing.assert_allclose(embeds, expected, rtol=1e-4, atol=1e-5)


class KVRunner:
    """A minimal runtime: preallocated cache rows, new K/V written at each row's length, by this
    runner (the portable form returns them) or by the graph itself (the CPU form, in place)."""

    def __init__(self, session: ort.InferenceSession, model: Any, batch: int, max_len: int) -> None:
        config = model.config.text_config
        self.session = session
        self.in_place = "seqlens_k" in {i.name for i in session.get_inputs()}
        self.table = model.model.language_model.embed_tokens.weight.detach().numpy()
        self.layers = config.num_hidden_layers
        shape = (batch, config.num_key_value_heads, max_len, config.hidden_size // config.num_attention_heads)
        self.cache = [np.zeros(shape, np.float32) for _ in range(2 * self.layers)]
        self.lengths = np.zeros(batch, np.int64)

    def step(self, tokens: list[list[int]]) -> np.ndarray:
        """Append each row's tokens (rows padded on the right to one length); logits of each row's last."""
        batch, seq = len(tokens), max(len(t) for t in tokens)
        ids = np.zeros((batch, seq), np.int64)
        positions = np.zeros((3, batch, seq), np.int64)
        for row, row_tokens in enumerate(tokens):
            ids[row, : len(row_tokens)] = row_tokens
            positions[:, row, : len(row_tokens)] = np.arange(self.lengths[row], self.lengths[row] + len(row_tokens))
        feeds = {"inputs_embeds": self.table[ids], "position_ids": positions,
                 "logits_index": np.array([len(t) - 1 for t in tokens], np.int64)}
        logits = self._in_place(feeds, seq) if self.in_place else self._portable(feeds, tokens)
        self.lengths += [len(t) for t in tokens]
        return logits

    def _portable(self, feeds: dict[str, np.ndarray], tokens: list[list[int]]) -> np.ndarray:
        batch, seq = len(tokens), max(len(t) for t in tokens)
        total = int(self.lengths.max()) + seq
        bias = np.full((batch, 1, seq, total), -np.inf, np.float32)
        past = total - seq
        for row, row_tokens in enumerate(tokens):
            for i in range(len(row_tokens)):
                bias[row, 0, i, : self.lengths[row]] = 0  # this row's cached tokens
                bias[row, 0, i, past : past + i + 1] = 0  # its new tokens, causally
        for i in range(self.layers):
            feeds[f"past_key_{i}"], feeds[f"past_value_{i}"] = self.cache[2 * i], self.cache[2 * i + 1]
        logits, *presents = self.session.run(None, {**feeds, "attention_bias": bias})
        for row, row_tokens in enumerate(tokens):
            n, length = len(row_tokens), int(self.lengths[row])
            for buffer, present in zip(self.cache, presents, strict=True):
                buffer[row, :, length : length + n] = present[row, :, :n]
        return logits

    def _in_place(self, feeds: dict[str, np.ndarray], seq: int) -> np.ndarray:
        """Cache rows bound as both past_* and present_*: the graph writes each row's new K/V."""
        seqlens = (self.lengths + seq - 1).astype(np.int32)
        feeds = {**feeds, "seqlens_k": seqlens, "total_sequence_length": np.array(seqlens.max() + 1, np.int32)}
        logits = np.empty((len(self.lengths), self.table.shape[0]), np.float32)
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        binding.bind_output("logits", "cpu", 0, logits.dtype, list(logits.shape), logits.ctypes.data)
        for i in range(self.layers):
            for j, kind in enumerate(("key", "value")):
                buffer = self.cache[2 * i + j]
                for io, bind in (("past", binding.bind_input), ("present", binding.bind_output)):
                    bind(f"{io}_{kind}_{i}", "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
        self.session.run_with_iobinding(binding)
        return logits


def _hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()


def _prompts(vocab: int, lengths: list[int]) -> list[list[int]]:
    rng = np.random.default_rng(3)
    return [rng.integers(20, vocab, n).tolist() for n in lengths]


def test_decoder_batch_1_chunked_prefill_then_decode(decoder_session: ort.InferenceSession, hf_model: Any) -> None:
    (prompt,) = _prompts(hf_model.config.text_config.vocab_size, [11])
    runner = KVRunner(decoder_session, hf_model, batch=1, max_len=20)
    runner.step([prompt[:6]])
    logits = runner.step([prompt[6:]])
    np.testing.assert_allclose(logits[0], _hf_logits(hf_model, prompt), rtol=1e-4, atol=1e-4)
    logits = runner.step([[42]])
    np.testing.assert_allclose(logits[0], _hf_logits(hf_model, [*prompt, 42]), rtol=1e-4, atol=1e-4)


def test_decoder_batch_3_mixed_lengths(decoder_session: ort.InferenceSession, hf_model: Any) -> None:
    prompts = _prompts(hf_model.config.text_config.vocab_size, [5, 9, 7])
    runner = KVRunner(decoder_session, hf_model, batch=3, max_len=16)
    logits = runner.step(prompts)
    for row, prompt in enumerate(prompts):
        np.testing.assert_allclose(logits[row], _hf_logits(hf_model, prompt), rtol=1e-4, atol=1e-4)
    for token in (30, 31):
        logits = runner.step([[token]] * 3)
        prompts = [[*p, token] for p in prompts]
        for row, prompt in enumerate(prompts):
            np.testing.assert_allclose(logits[row], _hf_logits(hf_model, prompt), rtol=1e-4, atol=1e-4)
    assert runner.lengths.tolist() == [7, 11, 9]
