"""TensorRT backend: the bundle's engines (built on this machine by `edgevlm build-engine`) run on
one CUDA stream, with the KV cache in GPU memory.

- The engine's KV cache must come from `create_cache(layout)`: a DeviceKVCache in device memory,
  its rows lowered to what the free GPU memory holds. Cache row blocks are bound in place
  (`set_tensor_address` on row `first_row` of each layer), the step's new K/V are scattered into
  them on the same stream (one op for a decode step, one per row for prefill).
- Prefill chunks run eagerly on the prefill profile's context. Decode steps (one token per row,
  rows from 0) are padded to a (batch, key width) bucket and replayed from a CUDA graph captured
  per bucket (trt_graphs.py); other steps run eagerly on the decode profile's context.
- Vision calls larger than the vision engine's patch range are split between frames.
Inputs come from host numpy arrays, logits go back to host memory: the engine samples on the CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgevlm.errors import UserError
from edgevlm.export.engine_profiles import DECODE, PREFILL, Profile
from edgevlm.runtime.backends.base import Backend, DecoderStep, VisionBatch
from edgevlm.runtime.backends.trt_buckets import DecodeBuckets, pad_decode
from edgevlm.runtime.backends.trt_buffers import DecoderBuffers, DecoderSizes, VisionBuffers
from edgevlm.runtime.backends.trt_compat import check_compatible
from edgevlm.runtime.backends.trt_device import device_info, memory_info, torch_device
from edgevlm.runtime.backends.trt_engine import Context, LoadedEngine, TensorInfo, tensorrt_module
from edgevlm.runtime.backends.trt_graphs import DecodeGraphs
from edgevlm.runtime.backends.trt_kv_cache import DeviceKVCache
from edgevlm.runtime.backends.trt_manifest import EngineManifest, default_engine_dir, read_engine_manifest
from edgevlm.runtime.backends.trt_memory import MemoryBudget, device_kv_layout
from edgevlm.runtime.backends.trt_preflight import check_backend
from edgevlm.runtime.bundle import Bundle
from edgevlm.runtime.kv_cache import MB, KVCache, KVLayout

log = logging.getLogger("edgevlm.runtime")

DEFAULT_MAX_GRAPHS = 24
DECODER_STEP_INPUTS = ("inputs_embeds", "position_ids", "attention_bias", "logits_index")


def rebuild_command(bundle_dir: Path) -> str:
    return f"edgevlm build-engine --bundle {bundle_dir}"


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, bundle: Bundle, device: str = "cuda", threads: int = 0, max_step_tokens: int = 512,
                 max_rows: int = 16, engine_dir: str | Path | None = None, cuda_graphs: bool = True,
                 max_graphs: int = DEFAULT_MAX_GRAPHS, reserve_mb: float | None = None) -> None:
        del threads  # ONNX Runtime's option; TensorRT has no host thread pool to size
        check_backend("tensorrt")
        if device == "cpu":
            raise UserError("--backend tensorrt runs on the GPU: use --device cuda (or cuda:N)")
        import torch

        self.bundle = bundle
        self.rebuild = rebuild_command(bundle.path)
        engine_dir = Path(engine_dir) if engine_dir is not None else default_engine_dir(bundle.path)
        self.manifest = read_engine_manifest(engine_dir, bundle.path, self.rebuild)
        self.device = torch_device("cuda" if device in ("auto", "tensorrt") else device)
        self.info = device_info(self.device)
        check_compatible(self.manifest.target, self.info.target(tensorrt_module().__version__), self.rebuild)
        _check_limits(self.manifest, max_step_tokens, max_rows, self.rebuild)
        self.reserve_bytes = None if reserve_mb is None else int(reserve_mb * MB)
        with torch.cuda.device(self.device):
            self.stream = torch.cuda.Stream(self.device)
            self._load_engines(engine_dir)
            self._allocate(max_step_tokens, max_rows)
        self.cuda_graphs = cuda_graphs
        self.graphs = DecodeGraphs(self.decoder, self._profile_index(DECODE), self.stream, max_graphs)
        self.buckets: DecodeBuckets | None = None
        self.cache: DeviceKVCache | None = None

    # -- setup -------------------------------------------------------------------------------
    def _load_engines(self, engine_dir: Path) -> None:
        handle = self.stream.cuda_stream
        self.vision = LoadedEngine(engine_dir / self.manifest.vision.file, self.rebuild)
        self.decoder = LoadedEngine(engine_dir / self.manifest.decoder.file, self.rebuild)
        self.vision_io = self.vision.tensors()
        self.decoder_io = self.decoder.tensors()
        _check_io(self.decoder_io, self.manifest.decoder.profiles[0], ["logits"], self.manifest.decoder.file)
        _check_io(self.vision_io, self.manifest.vision.profiles[0], ["image_embeds"], self.manifest.vision.file)
        self.vision_context = self.vision.context(0, handle)
        self.prefill_context = self.decoder.context(self._profile_index(PREFILL), handle)
        self.decode_context = self.decoder.context(self._profile_index(DECODE), handle)

    def _allocate(self, max_step_tokens: int, max_rows: int) -> None:
        import torch

        arch = self.bundle.architecture
        dtypes = {name: getattr(torch, info.dtype) for name, info in self.decoder_io.items()}
        self.decoder_buffers = DecoderBuffers(
            DecoderSizes(max_step_tokens, max_rows, self.manifest.limits.max_seq_len, arch.hidden_size,
                         arch.vocab_size, arch.num_layers, arch.num_kv_heads, arch.head_dim),
            dtypes, self.device,
        )
        vision = arch.vision
        self.max_patches = self.manifest.vision.profiles[0].shapes["pixel_values"].max[0]
        vision_dtypes = {name: getattr(torch, info.dtype) for name, info in self.vision_io.items()}
        self.vision_buffers = VisionBuffers(
            self.max_patches, vision.patch_dim, self.max_patches // vision.spatial_merge_size**2,
            vision.out_hidden_size, vision_dtypes, self.device,
        )
        self.kv_dtype = dtypes["past_key_0"]

    def _profile_index(self, name: str) -> int:
        return self.manifest.decoder.profile_index(name)

    # -- the KV cache --------------------------------------------------------------------------
    def create_cache(self, layout: KVLayout) -> DeviceKVCache:
        """The engine's cache, in GPU memory, with rows lowered to what fits after everything
        else is allocated. Replaces (and frees) any cache made before."""
        import torch

        limits = self.manifest.limits
        if layout.max_len > limits.max_seq_len:
            raise UserError(
                f"the engines cover sequences up to {limits.max_seq_len} tokens, the runtime asks {layout.max_len}: "
                f"lower --max-seq-len or rebuild with `{self.rebuild} --max-seq-len {layout.max_len}`"
            )
        self.graphs.clear()
        self.cache = None
        with torch.cuda.device(self.device):
            torch.cuda.empty_cache()  # cached-but-free blocks would read as used
        free, total = memory_info(self.device)
        try:
            sized = device_kv_layout(layout, MemoryBudget(total, free, self.reserve_bytes), limits.max_batch)
        except ValueError as exc:
            raise UserError(f"{exc}: lower --max-seq-len, or use an int8/int4 bundle") from exc
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            self.cache = DeviceKVCache(sized, self.kv_dtype, self.device, self.stream)
        self.buckets = DecodeBuckets.for_cache(sized.rows, sized.max_len) if self.cuda_graphs else None
        log.info("TensorRT KV cache: %d rows x %d tokens, %.0f MB on %s", sized.rows, sized.max_len,
                 sized.nbytes / MB, self.info.name)
        return self.cache

    # -- vision ------------------------------------------------------------------------------
    def encode_images(self, batch: VisionBatch) -> np.ndarray:
        import torch

        from edgevlm.runtime.backends.trt_vision_chunks import split_vision_batch

        parts = []
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for chunk in split_vision_batch(batch, self.max_patches):
                parts.append(self._encode_chunk(chunk))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _encode_chunk(self, batch: VisionBatch) -> np.ndarray:
        buffers = self.vision_buffers
        arrays = {
            "pixel_values": batch.pixel_values,
            "pos_grid": batch.pos_grid,
            "rotary_pos": batch.rotary_pos,
            "attention_bias": batch.attention_bias,
        }
        for name, array in arrays.items():
            getattr(buffers, name).upload(_as(array, self.vision_io[name]))
        context = self.vision_context
        context.set_shapes({name: tuple(a.shape) for name, a in arrays.items()})
        context.set_addresses(buffers.addresses())
        context.run(self.stream.cuda_stream)
        out = buffers.image_embeds.view(context.output_shape("image_embeds")).cpu()
        return out.numpy()

    # -- decoder -----------------------------------------------------------------------------
    def decode(self, step: DecoderStep, cache: KVCache) -> np.ndarray:
        import torch

        if not isinstance(cache, DeviceKVCache):
            raise TypeError("the TensorRT backend needs its GPU KV cache: create it with backend.create_cache(layout)")
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if not self._decode_graphed(step, cache):
                self._decode_eager(step, cache)
            logits = self.decoder_buffers.download_logits(step.batch)
            self.stream.synchronize()
        return logits

    def _decode_eager(self, step: DecoderStep, cache: DeviceKVCache) -> None:
        buffers = self.decoder_buffers
        arrays = {
            "inputs_embeds": step.inputs_embeds,
            "position_ids": step.position_ids,
            "attention_bias": step.attention_bias,
            "logits_index": step.logits_index,
        }
        for name, array in arrays.items():
            getattr(buffers, name).upload(_as(array, self.decoder_io[name]))
        context = self.decode_context if step.seq == 1 else self.prefill_context
        self._bind(context, {n: tuple(a.shape) for n, a in arrays.items()}, cache, step.first_row, step.batch)
        context.run(self.stream.cuda_stream)
        cache.write_all(step.first_row, step.starts, step.counts, buffers.present_views(step.batch, step.seq))

    def _decode_graphed(self, step: DecoderStep, cache: DeviceKVCache) -> bool:
        """Replay the bucket's CUDA graph; False when the step has no graph (run it eagerly).
        Graphs point into `self.cache`, the cache `create_cache` made last."""
        one_token_rows_from_0 = step.seq == 1 and step.first_row == 0 and bool(np.all(step.counts == 1))
        if self.buckets is None or cache is not self.cache or not one_token_rows_from_0:
            return False
        bucket = self.buckets.pick(step.batch, step.past + 1)
        if bucket is None:
            return False
        batch, total = bucket
        shapes = _decode_shapes(batch, total, self.bundle.architecture.hidden_size)
        captured = self.graphs.get(bucket, lambda context: self._bind(context, shapes, cache, 0, batch))
        if captured is None:
            return False
        padded = pad_decode(step.inputs_embeds, step.position_ids, step.attention_bias, batch, total)
        buffers = self.decoder_buffers
        for name in DECODER_STEP_INPUTS:
            getattr(buffers, name).upload(_as(getattr(padded, name), self.decoder_io[name]))
        captured.replay()
        presents = buffers.present_views(batch, 1)[:, :, : step.batch]
        cache.write_all(0, step.starts, step.counts, presents)
        return True

    def _bind(self, context: Context, shapes: dict[str, tuple[int, ...]], cache: DeviceKVCache, first_row: int,
              batch: int) -> None:
        layout = cache.layout
        past_shape = (batch, layout.kv_heads, layout.max_len, layout.head_dim)
        all_shapes = dict(shapes)
        addresses = {**self.decoder_buffers.input_addresses(), **self.decoder_buffers.output_addresses()}
        for layer in range(layout.num_layers):
            for kind, name in enumerate(("past_key", "past_value")):
                all_shapes[f"{name}_{layer}"] = past_shape
                addresses[f"{name}_{layer}"] = cache.row_block_address(layer, kind, first_row)
        context.set_shapes(all_shapes)
        context.set_addresses(addresses)

    def close(self) -> None:
        """Free in dependency order: graphs and contexts before the engines that made them."""
        import torch

        self.graphs.clear()
        self.cache = None
        for name in ("vision_context", "prefill_context", "decode_context", "decoder_buffers", "vision_buffers",
                     "vision", "decoder"):
            setattr(self, name, None)
        torch.cuda.empty_cache()


def _decode_shapes(batch: int, total: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "inputs_embeds": (batch, 1, hidden),
        "position_ids": (3, batch, 1),
        "attention_bias": (batch, 1, 1, total),
        "logits_index": (batch,),
    }


def _as(array: np.ndarray, info: TensorInfo) -> np.ndarray:
    """The host array in the engine tensor's type (a no-op when it already is)."""
    return np.ascontiguousarray(array, dtype=np.dtype(info.dtype))


def _check_limits(manifest: EngineManifest, max_step_tokens: int, max_rows: int, rebuild: str) -> None:
    limits = manifest.limits
    # A chunk is at most max_step_tokens long, and never longer than a whole sequence.
    chunk = min(max_step_tokens, limits.max_seq_len)
    if chunk > limits.prefill_chunk:
        raise UserError(
            f"the engines take prefill chunks up to {limits.prefill_chunk} tokens, the runtime asks {chunk}: "
            f"use --max-prefill-tokens {limits.prefill_chunk} or rebuild with `{rebuild} --prefill-chunk {chunk}`"
        )
    if max_rows > limits.max_batch:
        raise UserError(
            f"the engines take batches up to {limits.max_batch}, the runtime asks {max_rows}: "
            f"use --max-batch {limits.max_batch} or rebuild with `{rebuild} --max-batch {max_rows}`"
        )


def _check_io(io: dict[str, TensorInfo], profile: Profile, outputs: list[str], file: str) -> None:
    """The engine's inputs are the profile's, and it has the outputs the backend reads."""
    inputs = {name for name, info in io.items() if info.is_input}
    missing = sorted((set(profile.shapes) - inputs) | (set(outputs) - set(io)))
    if missing or inputs - set(profile.shapes):
        raise UserError(f"{file}: engine tensors differ from its manifest (missing {missing}): rebuild it")
