"""decoder.cpu.onnx, the decoder's in-place CPU form, in a real ONNX Runtime session with its
present outputs bound to the past inputs' memory (how the runtime runs it), against HF."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch


@pytest.fixture(scope="module")
def cpu_session(bundle_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle_dir / "decoder.cpu.onnx"), providers=["CPUExecutionProvider"])


class InPlaceRunner:
    """Cache rows bound as both past_* and present_*: the graph writes each row's new K/V itself."""

    def __init__(self, session: ort.InferenceSession, model: Any, batch: int, max_len: int) -> None:
        config = model.config.text_config
        self.session = session
        self.table = model.model.language_model.embed_tokens.weight.detach().numpy()
        self.layers = config.num_hidden_layers
        shape = (batch, config.num_key_value_heads, max_len, config.hidden_size // config.num_attention_heads)
        self.cache = [np.zeros(shape, np.float32) for _ in range(2 * self.layers)]
        self.lengths = np.zeros(batch, np.int64)

    def step(self, tokens: list[list[int]]) -> np.ndarray:
        """Append each row's tokens (padded on the right to one length); logits of each row's last."""
        batch, seq = len(tokens), max(len(t) for t in tokens)
        ids = np.zeros((batch, seq), np.int64)
        positions = np.zeros((3, batch, seq), np.int64)
        for row, row_tokens in enumerate(tokens):
            ids[row, : len(row_tokens)] = row_tokens
            positions[:, row, : len(row_tokens)] = np.arange(self.lengths[row], self.lengths[row] + len(row_tokens))
        seqlens = (self.lengths + seq - 1).astype(np.int32)
        arrays = {"inputs_embeds": self.table[ids], "position_ids": positions, "seqlens_k": seqlens,
                  "total_sequence_length": np.array(seqlens.max() + 1, np.int32),
                  "logits_index": np.array([len(t) - 1 for t in tokens], np.int64)}
        logits = np.empty((batch, self.table.shape[0]), np.float32)
        binding = self.session.io_binding()
        for name, array in arrays.items():
            binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        binding.bind_output("logits", "cpu", 0, logits.dtype, list(logits.shape), logits.ctypes.data)
        for i in range(self.layers):
            for j, kind in enumerate(("key", "value")):
                buffer = self.cache[2 * i + j]
                for io, bind in (("past", binding.bind_input), ("present", binding.bind_output)):
                    bind(f"{io}_{kind}_{i}", "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)
        self.session.run_with_iobinding(binding)
        self.lengths += [len(t) for t in tokens]
        return logits


def _hf_logits(model: Any, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()


def _prompts(vocab: int, lengths: list[int]) -> list[list[int]]:
    rng = np.random.default_rng(4)
    return [rng.integers(20, vocab, n).tolist() for n in lengths]


def test_chunked_prefill_then_decode_in_place(cpu_session: ort.InferenceSession, hf_model: Any) -> None:
    (prompt,) = _prompts(hf_model.config.text_config.vocab_size, [11])
    runner = InPlaceRunner(cpu_session, hf_model, batch=1, max_len=20)
    runner.step([prompt[:6]])
    logits = runner.step([prompt[6:]])
    np.testing.assert_allclose(logits[0], _hf_logits(hf_model, prompt), rtol=1e-4, atol=1e-4)
    logits = runner.step([[42]])
    np.testing.assert_allclose(logits[0], _hf_logits(hf_model, [*prompt, 42]), rtol=1e-4, atol=1e-4)


def test_padded_batch_then_decode_at_mixed_lengths(cpu_session: ort.InferenceSession, hf_model: Any) -> None:
    """Rows shorter than the step are right-padded; their padding's keys land past their length and
    the next token overwrites them, unseen."""
    prompts = _prompts(hf_model.config.text_config.vocab_size, [5, 9, 7])
    runner = InPlaceRunner(cpu_session, hf_model, batch=3, max_len=16)
    logits = runner.step(prompts)
    for row, prompt in enumerate(prompts):
        np.testing.assert_allclose(logits[row], _hf_logits(hf_model, prompt), rtol=1e-4, atol=1e-4)
    for token in (30, 31):
        logits = runner.step([[token]] * 3)
        prompts = [[*p, token] for p in prompts]
        for row, prompt in enumerate(prompts):
            np.testing.assert_allclose(logits[row], _hf_logits(hf_model, prompt), rtol=1e-4, atol=1e-4)


def test_one_attention_node_per_layer_and_no_cache_copies(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    graph = onnx.load(str(bundle_dir / "decoder.cpu.onnx"), load_external_data=False).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["GroupQueryAttention"] == manifest["architecture"]["num_layers"]
    past = {i.name for i in graph.input if i.name.startswith("past_")}
    readers = {n.op_type for n in graph.node if past & set(n.input)}
    assert readers <= {"GroupQueryAttention", "Shape"}  # Shape reads no data: nothing slices or copies a cache


def test_the_manifest_names_the_form_and_it_reads_the_decoders_weights(bundle_dir: Path,
                                                                        manifest: dict[str, Any]) -> None:
    form = manifest["graphs"]["decoder"]["cpu_form"]
    assert form["file"] == "decoder.cpu.onnx" and form["external_data"] == "decoder.onnx.data"
    assert set(form["inputs"]) >= {"seqlens_k", "total_sequence_length"} and "attention_bias" not in form["inputs"]
    assert not (bundle_dir / "decoder.cpu.onnx.data").exists()
    model = onnx.load(str(bundle_dir / "decoder.cpu.onnx"), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"decoder.onnx.data"}
    assert (bundle_dir / "decoder.cpu.onnx").stat().st_size < (bundle_dir / "decoder.onnx.data").stat().st_size / 10
    assert manifest["validation"]["cpu_form"]["greedy_matched"] == manifest["validation"]["cpu_form"]["greedy_tokens"]
