"""ONNX Runtime backend: the bundle's vision and decoder graphs, the decoder driven through IO
binding so the KV cache rows are bound in place (a pointer into the engine's arrays, no copy).

Execution providers: `device="cpu"` uses the CPU EP; `"cuda"` / `"tensorrt"` require that EP;
`"auto"` takes TensorRT, then CUDA, when onnxruntime-gpu provides them, else CPU. With a GPU EP
the cache stays in host memory and ONNX Runtime copies the bound rows per step (correct, not
zero-copy; device-resident caches are the TensorRT backend's job, BUNDLE.md).

Two decoder forms (told apart by their inputs): `decoder.onnx` takes an `attention_bias` and
returns the new tokens' K/V, which `KVCache.write_all` stores; the fp32 bundle's CPU form
`decoder.cpu.onnx` (GroupQueryAttention, export/decoder_gqa.py) takes `seqlens_k` and writes the
new K/V into the bound cache rows itself: its `present_*` outputs are bound to the `past_*` memory.
Likewise two vision forms: `vision.onnx` takes packed images and their block-diagonal
`attention_bias`; the fp32 CPU form `vision.cpu.onnx` (export/vision_mha.py) one block per call.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.runtime.backends.base import Backend, DecoderStep, VisionBatch
from edgevlm.runtime.bundle import Bundle, BundleError
from edgevlm.runtime.kv_cache import KVCache
from edgevlm.runtime.vision_inputs import attention_blocks

DEVICES = ("cpu", "cuda", "tensorrt", "auto")
GPU_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
REQUIRED = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
DECODER_INPUTS = ("inputs_embeds", "position_ids", "attention_bias", "logits_index")
IN_PLACE_INPUTS = ("inputs_embeds", "position_ids", "seqlens_k", "total_sequence_length", "logits_index")
MAX_BINDINGS = 64  # reusable IO bindings kept (one per step shape, least recently used dropped)


def select_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for a device name, best first, CPU always last as the fallback."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in REQUIRED:
        if REQUIRED[device] not in available:
            raise ValueError(f"device={device!r} needs {REQUIRED[device]} (install onnxruntime-gpu)")
        start = GPU_PREFERENCE.index(REQUIRED[device])
        return [p for p in GPU_PREFERENCE[start:] if p in available] + ["CPUExecutionProvider"]
    return [p for p in GPU_PREFERENCE if p in available] + ["CPUExecutionProvider"]


def graph_files(bundle: Bundle, providers: list[str], cpu_form: bool = True) -> dict[str, Path]:
    """The graph each session loads: the bundle's CPU form on the CPU provider alone (an int8
    bundle's: the TensorRT form's int8 activations do not fuse into integer kernels there; an fp32
    bundle's decoder: attention that updates the cache in place), else the graph."""
    cpu_only = cpu_form and providers == ["CPUExecutionProvider"]
    return {
        "vision": bundle.vision_cpu_file if cpu_only and bundle.vision_cpu_file else bundle.vision_file,
        "decoder": bundle.decoder_cpu_file if cpu_only and bundle.decoder_cpu_file else bundle.decoder_file,
    }


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int = 0, max_step_tokens: int = 512,
                 max_rows: int = 16, cpu_form: bool = True, spin: bool = True) -> None:
        import onnxruntime as ort

        self.providers = select_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Workers spin between a run's nodes (sub-millisecond at decode), never after it returns:
        # a pool still spinning then holds one of the 2 cores the vision call, the sampler or the
        # server needs. Demo bundle, vision call inside the engine, median of 12: 86 ms with the
        # decoder's workers left spinning after each step, 63 ms with this; decode at 16 rows
        # 6.0-6.4 vs 6.8 ms a step; at 1 row 1.45 vs 1.35 ms.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.graph_files = graph_files(bundle, self.providers, cpu_form)
        self.decoder = ort.InferenceSession(str(self.graph_files["decoder"]), options, providers=self.providers)
        # The vision session keeps its memory arena: its buffers are large (patches^2 attention),
        # and returned to the system after each call they are mapped afresh by the next, page by
        # page (first-touch faults cost milliseconds per MB in a VM). With the arena a call reuses
        # them: 448x448, interleaved medians, demo 71 vs 87 ms, `small` 652 vs 706 ms. It holds on to
        # the largest call's working set (demo +21 MB, `small` +73 MB), bounded by the largest image the
        # processor admits (its max_pixels), as a TensorRT engine reserves its activations.
        # Its workers spin between ops like the decoder's and stop when the call returns (the same
        # options). Demo bundle, 2 cores, two servers in alternation: 2-token answers to new images at
        # 16 concurrent +14-17 % tokens/s, 256-token answers at 16 within noise with a lower TTFT
        # (0.32-0.38 vs 0.39-0.44 s). Sleeping between ops had been chosen before spinning stopped
        # at the end of each call, when a spinning vision pool slowed the decoder step after it.
        self.vision = ort.InferenceSession(str(self.graph_files["vision"]), options, providers=self.providers)
        self.vision_per_block = "attention_bias" not in {i.name for i in self.vision.get_inputs()}
        self.dtype = bundle.dtype
        self.num_layers = bundle.architecture.num_layers
        self.in_place = "seqlens_k" in {i.name for i in self.decoder.get_inputs()}
        self._check_decoder_io()
        arch = bundle.architecture
        # Reused output buffers: logits [rows, vocab] and per-layer new K/V (flat, reshaped per step;
        # none for the in-place form, whose present outputs are the cache rows).
        self._logits = np.empty((max_rows, arch.vocab_size), np.float32)
        self._max_step_tokens = max(max_step_tokens, max_rows)
        size = 0 if self.in_place else self._max_step_tokens * arch.num_kv_heads * arch.head_dim
        self._present = [(np.empty(size, self.dtype), np.empty(size, self.dtype))
                         for _ in range(self.num_layers)]
        self._bindings: OrderedDict[tuple[int, ...], tuple[Any, list[tuple[np.ndarray, np.ndarray]]]] = OrderedDict()

    def _check_decoder_io(self) -> None:
        names = {i.name for i in self.decoder.get_inputs()}
        past = {f"past_{kv}_{i}" for kv in ("key", "value") for i in range(self.num_layers)}
        expected = set(IN_PLACE_INPUTS if self.in_place else DECODER_INPUTS) | past
        if names != expected:
            raise BundleError(
                f"{self.graph_files['decoder'].name} inputs {sorted(names)} differ from BUNDLE.md's {sorted(expected)}"
            )

    def encode_images(self, batch: VisionBatch) -> np.ndarray:
        feeds = {
            "pixel_values": batch.pixel_values.astype(self.dtype, copy=False),
            "pos_grid": batch.pos_grid,
            "rotary_pos": batch.rotary_pos,
        }
        if self.vision_per_block:
            # The fp32 CPU form (export/vision_mha.py) takes one attention block (image or frame)
            # per call, unmasked: packing would only add the cross-image scores a mask then hides.
            return np.concatenate([
                self.vision.run(["image_embeds"], {k: v[lo:hi] for k, v in feeds.items()})[0]
                for lo, hi in attention_blocks(batch.attention_bias)
            ])
        return self.vision.run(["image_embeds"], {**feeds, "attention_bias": batch.attention_bias})[0]

    def decode(self, step: DecoderStep, cache: KVCache) -> np.ndarray:
        if self.in_place:
            return self._decode_in_place(step, cache)
        if step.batch > len(self._logits) or step.batch * step.seq > self._max_step_tokens:
            return self._run_unbuffered(step, cache)
        binding, presents = self._binding(step, cache)
        bound = self._bind_inputs(binding, step)
        self.decoder.run_with_iobinding(binding)
        del bound
        cache.write_all(step.first_row, step.starts, step.counts, presents)
        return self._logits[: step.batch]

    def _decode_in_place(self, step: DecoderStep, cache: KVCache) -> np.ndarray:
        """The CPU form: the graph writes each row's new K/V at its length in the bound rows."""
        if step.seq > 1 and step.batch > 1 and bool(np.any(step.starts > 0)):
            # ONNX Runtime's GroupQueryAttention runs a chunk that follows cached tokens only one row
            # at a time (a batch of them is refused); the rows' logits are copied out of the buffer
            # each call reuses.
            return np.concatenate([self._decode_in_place(step.row(b), cache).copy() for b in range(step.batch)])
        key = (id(cache), step.first_row, step.batch)
        binding, _ = self._bindings.get(key) or self._in_place_binding(key, step, cache)
        self._bindings.move_to_end(key)
        logits = self._logits[: step.batch]
        if step.batch > len(self._logits):  # more rows than the reused buffer holds: a buffer for this step
            logits = np.empty((step.batch, self._logits.shape[1]), np.float32)
            _bind(binding.bind_output, "logits", logits)
        seqlens = (step.starts + (step.seq - 1)).astype(np.int32)
        arrays = [
            _as(step.inputs_embeds, self.dtype),
            _as(step.position_ids, np.dtype(np.int64)),
            seqlens,
            np.array(int(seqlens.max()) + 1, np.int32),
            _as(step.logits_index, np.dtype(np.int64)),
        ]
        for name, array in zip(IN_PLACE_INPUTS, arrays, strict=True):
            _bind(binding.bind_input, name, array)
        self.decoder.run_with_iobinding(binding)
        del arrays
        return logits

    def _in_place_binding(self, key: tuple[int, ...], step: DecoderStep, cache: KVCache) -> tuple[Any, list]:
        """A binding with the step's cache rows as both past_* inputs and present_* outputs (the same
        memory: that is what makes GroupQueryAttention write in place instead of copying)."""
        binding = self.decoder.io_binding()
        self._bind_cache(binding, step, cache)
        for layer in range(self.num_layers):
            keys, values = cache.rows_view(layer, step.first_row, step.batch)
            _bind(binding.bind_output, f"present_key_{layer}", keys)
            _bind(binding.bind_output, f"present_value_{layer}", values)
        if step.batch <= len(self._logits):
            _bind(binding.bind_output, "logits", self._logits[: step.batch])
        return self._remember(key, (binding, []))

    def _remember(self, key: tuple[int, ...], entry: tuple[Any, list]) -> tuple[Any, list]:
        """Keep a binding for its step shape, the least recently used one dropped beyond MAX_BINDINGS."""
        self._bindings[key] = entry
        if len(self._bindings) > MAX_BINDINGS:
            self._bindings.popitem(last=False)
        return entry

    def _bind_inputs(self, binding, step: DecoderStep) -> list[np.ndarray]:
        """Bind the step's own inputs; returns the bound arrays, which the caller keeps alive until
        the run ends (a dtype conversion would otherwise free its copy under ONNX Runtime)."""
        arrays = [
            _as(step.inputs_embeds, self.dtype),
            _as(step.position_ids, np.dtype(np.int64)),
            _as(step.attention_bias, np.dtype(np.float32)),
            _as(step.logits_index, np.dtype(np.int64)),
        ]
        for name, array in zip(DECODER_INPUTS, arrays, strict=True):
            _bind(binding.bind_input, name, array)
        return arrays

    def _bind_cache(self, binding, step: DecoderStep, cache: KVCache) -> None:
        """The step's block of cache rows as the past_* inputs, in place (no copy)."""
        for layer in range(self.num_layers):
            keys, values = cache.rows_view(layer, step.first_row, step.batch)
            _bind(binding.bind_input, f"past_key_{layer}", keys)
            _bind(binding.bind_input, f"past_value_{layer}", values)

    def _binding(self, step: DecoderStep, cache: KVCache) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
        """An IO binding with the cache rows and the output buffers of this step's shape bound.
        Rule: those pointers depend only on (cache, first_row, batch, seq), so a binding is made
        once per shape and reused; decode steps repeat one shape, and then only the four small
        inputs are rebound per step (binding 2 x layers cache tensors costs more than a tiny step)."""
        key = (id(cache), step.first_row, step.batch, step.seq)
        if key in self._bindings:
            self._bindings.move_to_end(key)
            return self._bindings[key]
        binding = self.decoder.io_binding()
        self._bind_cache(binding, step, cache)
        _bind(binding.bind_output, "logits", self._logits[: step.batch])
        presents = self._present_views(step, cache.layout.kv_heads, cache.layout.head_dim)
        for layer, (keys, values) in enumerate(presents):
            _bind(binding.bind_output, f"present_key_{layer}", keys)
            _bind(binding.bind_output, f"present_value_{layer}", values)
        return self._remember(key, (binding, presents))

    def _present_views(self, step: DecoderStep, kv_heads: int, head_dim: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views of the reused buffers. # -> per layer 2 x [batch, kv_heads, seq, head_dim]"""
        shape = (step.batch, kv_heads, step.seq, head_dim)
        count = step.batch * kv_heads * step.seq * head_dim
        return [(k[:count].reshape(shape), v[:count].reshape(shape)) for k, v in self._present]

    def _run_unbuffered(self, step: DecoderStep, cache: KVCache) -> np.ndarray:
        """A step larger than the reused buffers: ONNX Runtime allocates the outputs."""
        binding = self.decoder.io_binding()
        bound = self._bind_inputs(binding, step)
        self._bind_cache(binding, step, cache)
        names = ["logits"] + [f"present_{kv}_{i}" for i in range(self.num_layers) for kv in ("key", "value")]
        for name in names:
            binding.bind_output(name, "cpu")
        self.decoder.run_with_iobinding(binding)
        del bound
        outputs = dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))
        presents = [(outputs[f"present_key_{i}"], outputs[f"present_value_{i}"]) for i in range(self.num_layers)]
        cache.write_all(step.first_row, step.starts, step.counts, presents)
        return outputs["logits"]


def _as(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The array itself when it already has the dtype and C layout (the usual case), else a copy."""
    return np.ascontiguousarray(array, dtype=dtype)


def _bind(bind, name: str, array: np.ndarray) -> None:
    # The pointer must stay valid until the run ends: every bound array is owned by the caller
    # (engine inputs, the cache, or this backend's buffers) for the whole step.
    assert array.flags.c_contiguous, f"{name} must be C-contiguous to bind in place"
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
