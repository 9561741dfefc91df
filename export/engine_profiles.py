"""TensorRT optimization profiles for the bundle's graphs, derived from the manifest limits.

Pure Python (no tensorrt): the builder turns each `Profile` into an `IOptimizationProfile`, the
runtime reads the same ranges back from the engine manifest to pick a profile and to check shapes.

Every input dimension has a meaning fixed by BUNDLE.md (batch, new tokens, cached + new tokens,
cache length, patches, or a model constant). A dimension the manifest gives as a number is static
and its range is that number; a named (dynamic) one gets the range of its meaning in that profile.
The decoder gets two profiles: index 0 for prefill chunks, index 1 for decode (one new token).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgevlm.runtime.bundle import Architecture, BundleLimits, VisionArchitecture

PREFILL, DECODE, VISION = "prefill", "decode", "vision"
# Profile index of each decoder profile inside the decoder engine (the builder adds them in order).
DECODER_PROFILE_ORDER: tuple[str, ...] = (PREFILL, DECODE)
DEFAULT_PREFILL_CHUNK = 512

# Dimension meanings, by position, for every graph input (BUNDLE.md tables).
BATCH, SEQ, TOTAL, CACHE, PATCHES = "batch", "seq", "total", "cache_len", "patches"


@dataclass(frozen=True, slots=True)
class DimRange:
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.opt <= self.max:
            raise ValueError(f"need 0 <= min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}")

    @classmethod
    def fixed(cls, value: int) -> DimRange:
        return cls(value, value, value)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.min <= value <= self.max


@dataclass(frozen=True, slots=True)
class ShapeRange:
    """min/opt/max shapes of one input, as TensorRT's `IOptimizationProfile.set_shape` takes them."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @classmethod
    def of(cls, dims: tuple[DimRange, ...]) -> ShapeRange:
        return cls(tuple(d.min for d in dims), tuple(d.opt for d in dims), tuple(d.max for d in dims))

    def admits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    shapes: Mapping[str, ShapeRange]

    def admits(self, shapes: Mapping[str, tuple[int, ...]]) -> bool:
        """Whether one call's input shapes all lie inside this profile."""
        return all(name in self.shapes and self.shapes[name].admits(shape) for name, shape in shapes.items())

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shapes": {name: r.to_json() for name, r in self.shapes.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        shapes = {
            name: ShapeRange(tuple(r["min"]), tuple(r["opt"]), tuple(r["max"]))
            for name, r in data["shapes"].items()
        }
        return cls(name=str(data["name"]), shapes=shapes)


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """What the engines must cover. Build-time options may lower the manifest's limits, not raise
    them: the exported graphs were validated up to the manifest's."""

    max_batch: int
    max_seq_len: int
    opt_batch: int
    prefill_chunk: int
    min_pixels: int
    max_pixels: int
    vision_max_images: int = 1

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_seq_len", "opt_batch", "prefill_chunk", "min_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vision_max_images < 1:
            raise ValueError(f"vision_max_images must be >= 1, got {self.vision_max_images}")
        if self.opt_batch > self.max_batch:
            raise ValueError(f"opt_batch must be <= max_batch ({self.max_batch}), got {self.opt_batch}")
        if self.prefill_chunk > self.max_seq_len:
            raise ValueError(
                f"prefill_chunk must be <= max_seq_len ({self.max_seq_len}), got {self.prefill_chunk}"
            )
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"max_pixels must be >= min_pixels ({self.min_pixels}), got {self.max_pixels}")

    @classmethod
    def from_bundle(
        cls,
        limits: BundleLimits,
        *,
        max_batch: int | None = None,
        max_seq_len: int | None = None,
        opt_batch: int | None = None,
        prefill_chunk: int | None = None,
        vision_max_images: int = 1,
    ) -> EngineLimits:
        batch = _at_most("max_batch", max_batch, limits.max_batch)
        seq = _at_most("max_seq_len", max_seq_len, limits.max_seq_len)
        return cls(
            max_batch=batch,
            max_seq_len=seq,
            # Decode batches are what the builder tunes for: half the rows busy is the common case.
            opt_batch=opt_batch if opt_batch is not None else max(1, batch // 2),
            prefill_chunk=prefill_chunk if prefill_chunk is not None else min(DEFAULT_PREFILL_CHUNK, seq),
            min_pixels=limits.min_pixels,
            max_pixels=limits.max_pixels,
            vision_max_images=vision_max_images,
        )

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _at_most(name: str, value: int | None, limit: int) -> int:
    if value is None:
        return limit
    if not 1 <= value <= limit:
        raise ValueError(f"{name} must be in [1, {limit}] (the bundle's limit), got {value}")
    return value


# -- decoder ---------------------------------------------------------------------------------
def decoder_dim_meanings(arch: Architecture) -> dict[str, tuple[str | int, ...]]:
    """Per decoder input, what each dimension is: a meaning name or the model constant."""
    kv = (BATCH, arch.num_kv_heads, CACHE, arch.head_dim)
    meanings: dict[str, tuple[str | int, ...]] = {
        "inputs_embeds": (BATCH, SEQ, arch.hidden_size),
        "position_ids": (3, BATCH, SEQ),
        "attention_bias": (BATCH, 1, SEQ, TOTAL),
        "logits_index": (BATCH,),
    }
    for i in range(arch.num_layers):
        meanings[f"past_key_{i}"] = kv
        meanings[f"past_value_{i}"] = kv
    return meanings


def decoder_dim_ranges(limits: EngineLimits) -> dict[str, dict[str, DimRange]]:
    """Ranges of each dynamic meaning, per decoder profile.

    Prefill: a chunk of up to `prefill_chunk` new tokens on top of any cached prefix; tuned for one
    sequence's full chunk. Decode: one new token per row, tuned for `opt_batch` rows at half the
    context. Cache rows are bound whole, so their length is the runtime's max_len (<= max_seq_len).
    """
    chunk, max_len = limits.prefill_chunk, limits.max_seq_len
    cache = DimRange(1, max_len, max_len)
    return {
        PREFILL: {
            BATCH: DimRange(1, 1, limits.max_batch),
            SEQ: DimRange(1, chunk, chunk),
            TOTAL: DimRange(1, chunk, max_len),
            CACHE: cache,
        },
        DECODE: {
            BATCH: DimRange(1, limits.opt_batch, limits.max_batch),
            SEQ: DimRange.fixed(1),
            TOTAL: DimRange(1, max(1, max_len // 2), max_len),
            CACHE: cache,
        },
    }


def decoder_profiles(
    arch: Architecture, limits: EngineLimits, graph_inputs: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[Profile, ...]:
    """The decoder engine's profiles, in DECODER_PROFILE_ORDER. `graph_inputs` is the manifest's
    `graphs.decoder.inputs` (static dims checked against the architecture); None means all the
    BUNDLE.md-dynamic dims are dynamic."""
    meanings = decoder_dim_meanings(arch)
    ranges = decoder_dim_ranges(limits)
    return tuple(
        Profile(name, _shapes(meanings, ranges[name], graph_inputs)) for name in DECODER_PROFILE_ORDER
    )


# -- vision ----------------------------------------------------------------------------------
def patch_range(vision: VisionArchitecture, limits: EngineLimits) -> DimRange:
    """Patches of one vision call. GLM's processor resizes each image to h x w (multiples of
    patch x merge) with temporal * h * w within [min_pixels, max_pixels]; an image is
    h * w / patch^2 patches, a whole number of merge x merge blocks. Tuned for one image at the
    largest size; up to `vision_max_images` such images per call."""
    per_patch = vision.temporal_patch_size * vision.patch_size**2
    block = vision.spatial_merge_size**2
    smallest = max(block, _round_up(math.ceil(limits.min_pixels / per_patch), block))
    largest = max(block, limits.max_pixels // per_patch // block * block)
    if largest < smallest:
        raise ValueError(
            f"max_pixels={limits.max_pixels} admits no image of at least min_pixels={limits.min_pixels}"
        )
    return DimRange(smallest, largest, largest * limits.vision_max_images)


def vision_dim_meanings(vision: VisionArchitecture) -> dict[str, tuple[str | int, ...]]:
    return {
        "pixel_values": (PATCHES, vision.patch_dim),
        "pos_grid": (PATCHES, 2),
        "rotary_pos": (PATCHES, 2),
        "attention_bias": (PATCHES, PATCHES),
    }


def vision_profile(
    vision: VisionArchitecture,
    limits: EngineLimits,
    graph_inputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Profile:
    ranges = {PATCHES: patch_range(vision, limits)}
    return Profile(VISION, _shapes(vision_dim_meanings(vision), ranges, graph_inputs))


# -- shared ----------------------------------------------------------------------------------
def _shapes(
    meanings: Mapping[str, tuple[str | int, ...]],
    ranges: Mapping[str, DimRange],
    graph_inputs: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, ShapeRange]:
    if graph_inputs is not None:
        _check_names(meanings, graph_inputs)
    shapes = {}
    for name, dims in meanings.items():
        declared = graph_inputs[name]["shape"] if graph_inputs is not None else [None] * len(dims)
        if len(declared) != len(dims):
            raise ValueError(f"graph input {name}: manifest rank {len(declared)}, BUNDLE.md says {len(dims)}")
        pairs = zip(dims, declared, strict=True)
        shapes[name] = ShapeRange.of(tuple(_dim(name, meaning, dim, ranges) for meaning, dim in pairs))
    return shapes


def _dim(name: str, meaning: str | int, declared: Any, ranges: Mapping[str, DimRange]) -> DimRange:
    # ONNX writes a dim with neither a name nor a size as 0: that one is dynamic too.
    declared = declared if isinstance(declared, int) and declared > 0 else None
    if isinstance(meaning, int):
        if declared is not None and declared != meaning:
            raise ValueError(f"graph input {name}: manifest dim {declared}, the architecture says {meaning}")
        return DimRange.fixed(meaning)
    if declared is not None:
        # A static dim in the exported graph: the profile must say exactly that, and it must lie
        # in the range the runtime will use it with.
        if declared not in ranges[meaning]:
            raise ValueError(
                f"graph input {name}: static {meaning} dim {declared} is outside the engine range "
                f"[{ranges[meaning].min}, {ranges[meaning].max}]"
            )
        return DimRange.fixed(declared)
    return ranges[meaning]


def _check_names(meanings: Mapping[str, Any], graph_inputs: Mapping[str, Any]) -> None:
    missing = sorted(set(meanings) - set(graph_inputs))
    extra = sorted(set(graph_inputs) - set(meanings))
    if missing or extra:
        raise ValueError(f"graph inputs differ from BUNDLE.md: missing {missing}, unexpected {extra}")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
