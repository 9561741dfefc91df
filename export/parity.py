"""The parity gate: the HF model in PyTorch against the bundle in ONNX Runtime (CPU).

Fixed inputs: a demo shapes scene and a grounding question. The reference is HF's own forward
(vision tower, get_rope_index, DynamicCache) computed in float32 on the exported weights
(`reference.float32_reference` for fp16 exports); the
candidate drives the bundle exactly as the runtime will: numpy vision inputs, numpy embedding
gather, M-RoPE positions, a preallocated KV cache written in place through the KV interface.

Decoding is greedy for `GREEDY_TOKENS` steps, EOS ignored. The candidate is teacher-forced with
the reference's tokens, so every step's logits are compared; all 32 argmaxes agreeing is the same
as the two greedy decodes being token-identical. Errors: max abs over all values, and rel =
max abs / max |reference| (element-wise relative error is meaningless near zero).

Reduced precision: ONNX Runtime runs fp16 graphs on CPU (it casts around the few ops without
fp16 kernels), but fp16 rounding differs from float32, so fp16 exports get a looser `rel` budget,
and a greedy step may pick another token only where the reference itself is within that budget
(a near-tie no precision can settle). fp32 allows no near-ties. ONNX Runtime CPU has no bfloat16
MatMul, so bf16 bundles are exported only with validation skipped (ExportOptions enforces it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevlm.runtime.rope_index import rope_index, token_types
from edgevlm.runtime.vision_inputs import attention_blocks, vision_inputs

GREEDY_TOKENS = 32
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
PARITY_SEED = 7  # the demo scene and question used by the gate


class ParityError(Exception):
    """The bundle's outputs differ from PyTorch beyond the dtype's tolerance."""


@dataclass(frozen=True, slots=True)
class ParityInputs:
    """Processor output for the fixed case, as numpy."""

    input_ids: np.ndarray  # [seq] int64
    mm_token_type_ids: np.ndarray  # [seq] int64
    pixel_values: np.ndarray  # [patches, patch_dim] float32
    image_grid_thw: np.ndarray  # [images, 3] int64


@dataclass(frozen=True, slots=True)
class Outputs:
    """One side's results: image embeddings and the logits of each greedy step."""

    image_embeds: np.ndarray  # [image_tokens, hidden] float32
    logits: np.ndarray  # [steps, vocab] float32
    tokens: np.ndarray  # [steps] int64: argmax of each step's logits


@dataclass(frozen=True, slots=True)
class ParityReport:
    """Errors of the candidate against the reference, and the verdict."""

    dtype: str
    tolerance: float
    vision_max_abs: float
    vision_max_rel: float
    logits_max_abs: float
    logits_max_rel: float
    greedy_tokens: int
    greedy_matched: int
    near_ties: int
    seconds: float

    @property
    def greedy_identical(self) -> bool:
        return self.greedy_matched == self.greedy_tokens

    def failures(self) -> list[str]:
        """Why the gate fails; empty when it passes."""
        problems = []
        if not self.vision_max_rel <= self.tolerance:
            problems.append(f"vision embeddings rel error {self.vision_max_rel:.2e} > {self.tolerance:.0e}")
        if not self.logits_max_rel <= self.tolerance:
            problems.append(f"logits rel error {self.logits_max_rel:.2e} > {self.tolerance:.0e}")
        if self.greedy_matched + self.near_ties < self.greedy_tokens:
            wrong = self.greedy_tokens - self.greedy_matched - self.near_ties
            problems.append(f"{wrong} of {self.greedy_tokens} greedy tokens differ")
        return problems

    def as_manifest(self) -> dict[str, Any]:
        return {
            "skipped": False,
            "reference": "PyTorch (transformers) float32 on the exported weights",
            "candidate": "ONNX Runtime CPUExecutionProvider",
            "dtype": self.dtype,
            "tolerance_rel": self.tolerance,
            "vision_max_abs": self.vision_max_abs,
            "vision_max_rel": self.vision_max_rel,
            "logits_max_abs": self.logits_max_abs,
            "logits_max_rel": self.logits_max_rel,
            "greedy_tokens": self.greedy_tokens,
            "greedy_matched": self.greedy_matched,
            "greedy_near_ties": self.near_ties,
            "greedy_identical": self.greedy_identical,
            "seconds": self.seconds,
        }


def parity_inputs(processor: Any, seed: int = PARITY_SEED) -> ParityInputs:
    """The fixed case: a demo scene and a grounding question about it, through the processor."""
    from edgevlm.demo.questions import make_sample
    from edgevlm.demo.shapes import render

    sample = make_sample(seed, "box", "en")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[render(sample.scene)], return_tensors="np")
    return ParityInputs(
        input_ids=np.asarray(batch["input_ids"][0], dtype=np.int64),
        mm_token_type_ids=np.asarray(batch["mm_token_type_ids"][0], dtype=np.int64),
        pixel_values=np.asarray(batch["pixel_values"], dtype=np.float32),
        image_grid_thw=np.asarray(batch["image_grid_thw"], dtype=np.int64),
    )


def torch_reference(model: Any, inputs: ParityInputs, steps: int = GREEDY_TOKENS) -> Outputs:
    """HF's own forward with its DynamicCache, greedy; `model` computes in float32."""
    import torch

    grid = torch.from_numpy(inputs.image_grid_thw)
    pixels = torch.from_numpy(inputs.pixel_values)
    ids = torch.from_numpy(inputs.input_ids)[None]
    with torch.no_grad():
        embeds = torch.cat(model.model.get_image_features(pixels, grid).pooler_output)
        out = model(
            input_ids=ids,
            pixel_values=pixels,
            image_grid_thw=grid,
            mm_token_type_ids=torch.from_numpy(inputs.mm_token_type_ids)[None],
            use_cache=True,
            logits_to_keep=1,
        )
        logits, tokens = [], []
        for step in range(steps):
            step_logits = out.logits[0, -1].float()
            tokens.append(int(step_logits.argmax()))
            logits.append(step_logits.numpy())
            if step + 1 < steps:
                out = model(input_ids=torch.tensor([[tokens[-1]]]), cache=out.cache, use_cache=True)
    return Outputs(embeds.float().numpy(), np.stack(logits), np.asarray(tokens, dtype=np.int64))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Pre-packed weight copies would cost another ~1x the graph's weights (and session start time)
    # for the few dozen steps the gate runs.
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _causal_bias(seq: int, past: int = 0) -> np.ndarray:
    # [1, 1, seq, past + seq]: every cached key visible; among the new ones 0 on and below the
    # diagonal, -inf above
    new = np.triu(np.full((seq, seq), -np.inf, dtype=np.float32), 1)
    return np.concatenate([np.zeros((seq, past), np.float32), new], axis=1)[None, None]


def onnx_candidate(bundle_dir: Path, manifest: dict[str, Any], inputs: ParityInputs, teacher: np.ndarray,
                   cpu_form: bool = False) -> Outputs:
    """The bundle through ONNX Runtime: vision, then prefill + decode steps over an in-place KV cache,
    fed the reference's tokens (`teacher`, [steps]); with `cpu_form`, both graphs' CPU forms."""
    arch, dtype = manifest["architecture"], np.dtype(manifest["graphs"]["decoder"]["inputs"]["inputs_embeds"]["dtype"])
    merge = arch["vision"]["spatial_merge_size"]
    graphs = manifest["graphs"]
    vision = _session(bundle_dir / (graphs["vision"]["cpu_form"] if cpu_form else graphs["vision"])["file"])
    index = vision_inputs(inputs.image_grid_thw, merge)
    feeds = {"pixel_values": inputs.pixel_values.astype(dtype), "pos_grid": index.pos_grid,
             "rotary_pos": index.rotary_pos}
    if "attention_bias" in {i.name for i in vision.get_inputs()}:
        image_embeds = vision.run(None, {**feeds, "attention_bias": index.attention_bias})[0]
    else:  # the CPU form: one attention block per call (export/vision_mha.py)
        image_embeds = np.concatenate([vision.run(None, {k: v[lo:hi] for k, v in feeds.items()})[0]
                                       for lo, hi in attention_blocks(index.attention_bias)])
    del vision
    table = np.load(bundle_dir / manifest["embed_tokens"]["file"], mmap_mode="r")
    image_token = manifest["tokens"]["image_token_id"]
    embeds = np.asarray(table[inputs.input_ids], dtype=dtype)  # [seq, hidden]
    embeds[inputs.input_ids == image_token] = image_embeds
    ids = np.asarray(inputs.input_ids).reshape(-1)
    positions, delta = rope_index(token_types(ids, image_token), inputs.image_grid_thw, merge)
    next_position = len(ids) + delta
    decoder = graphs["decoder"]
    file = decoder["cpu_form"]["file"] if cpu_form else decoder["file"]
    logits = _decode(bundle_dir / file, manifest, embeds, positions, next_position, table, teacher, dtype)
    return Outputs(image_embeds.astype(np.float32), logits, logits.argmax(-1))


def _decode(
    graph: Path,
    manifest: dict[str, Any],
    embeds: np.ndarray,
    positions: np.ndarray,
    next_position: int,
    table: np.ndarray,
    teacher: np.ndarray,
    dtype: np.dtype,
) -> np.ndarray:
    # embeds: [seq, hidden]; positions: [3, seq]; cache: 2 * layers x [1, kv_heads, max_len, head_dim]
    arch = manifest["architecture"]
    decoder = _session(graph)
    in_place = "seqlens_k" in {i.name for i in decoder.get_inputs()}  # the CPU form (decoder_gqa.py)
    seq, steps = embeds.shape[0], len(teacher)
    shape = (1, arch["num_kv_heads"], seq + steps, arch["head_dim"])
    cache = [np.zeros(shape, dtype) for _ in range(2 * arch["num_layers"])]
    names = [f"past_{kind}_{i}" for i in range(arch["num_layers"]) for kind in ("key", "value")]
    length, logits = 0, []
    new_embeds, new_positions = embeds[None], positions[:, None]
    for step in range(steps):
        new = new_embeds.shape[1]
        feeds = {"inputs_embeds": new_embeds, "position_ids": new_positions,
                 "logits_index": np.array([new - 1], np.int64), **_mask_feeds(in_place, length, new)}
        outputs = decoder.run(None, {**feeds, **dict(zip(names, cache, strict=True))})
        logits.append(outputs[0][0])
        for buffer, present in zip(cache, outputs[1:], strict=True):
            # the CPU form returns whole buffers; the portable form the new tokens, written at the length
            buffer[:, :, length : length + new] = present[:, :, length : length + new] if in_place else present
        length += new
        new_embeds = np.asarray(table[[int(teacher[step])]], dtype=dtype)[None]
        new_positions = np.full((3, 1, 1), next_position + step, np.int64)
    return np.stack(logits).astype(np.float32)


def _mask_feeds(in_place: bool, past: int, new: int) -> dict[str, np.ndarray]:
    """What tells the decoder that `new` tokens follow `past` cached ones, causally."""
    if in_place:
        return {"seqlens_k": np.array([past + new - 1], np.int32),
                "total_sequence_length": np.array(past + new, np.int32)}
    return {"attention_bias": _causal_bias(new, past)}


def _errors(candidate: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    abs_error = float(np.abs(candidate.astype(np.float64) - reference).max())
    scale = float(np.abs(reference).max())
    return abs_error, abs_error / scale if scale > 0 else abs_error


def compare(reference: Outputs, candidate: Outputs, dtype: str, seconds: float) -> ParityReport:
    """Errors, greedy agreement and near-ties of the candidate against the reference."""
    tolerance = TOLERANCE[dtype]
    vision_abs, vision_rel = _errors(candidate.image_embeds, reference.image_embeds)
    logits_abs, logits_rel = _errors(candidate.logits, reference.logits)
    matched = int((candidate.tokens == reference.tokens).sum())
    near_ties = 0
    if dtype != "fp32":
        budget = tolerance * float(np.abs(reference.logits).max())
        for step in np.flatnonzero(candidate.tokens != reference.tokens):
            row = reference.logits[step]
            near_ties += int(row[reference.tokens[step]] - row[candidate.tokens[step]] <= budget)
    return ParityReport(
        dtype=dtype,
        tolerance=tolerance,
        vision_max_abs=vision_abs,
        vision_max_rel=vision_rel,
        logits_max_abs=logits_abs,
        logits_max_rel=logits_rel,
        greedy_tokens=len(reference.tokens),
        greedy_matched=matched,
        near_ties=near_ties,
        seconds=round(seconds, 2),
    )


def check_parity(report: ParityReport) -> None:
    """Raise ParityError with every failed criterion in one message."""
    problems = report.failures()
    if problems:
        raise ParityError(f"parity gate failed ({report.dtype}): " + "; ".join(problems))
