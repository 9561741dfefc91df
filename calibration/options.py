"""What `edgevlm quantize` was asked to do, validated once (ValueError names the field)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODES: tuple[str, ...] = ("int8", "int4")
# Activation calibrators for int8; weight rounding algorithms for int4.
METHODS: dict[str, tuple[str, ...]] = {
    "int8": ("percentile", "minmax", "entropy"),
    "int4": ("rtn", "awq", "gptq"),
}
DEFAULT_METHOD = {"int8": "percentile", "int4": "rtn"}
# Accuracy points (percentage points of the held-out score) a mode may lose before the gate refuses.
DEFAULT_MAX_DROP = {"int8": 1.0, "int4": 2.0}
BLOCK_SIZES: tuple[int, ...] = (32, 64, 128)
DEFAULT_SAMPLES = 32


@dataclass(frozen=True, slots=True)
class QuantizeOptions:
    bundle_dir: Path
    out_dir: Path
    mode: str
    method: str | None = None  # None: the mode's default
    samples: int = DEFAULT_SAMPLES
    calib_images: Path | None = None
    calib_prompts: Path | None = None
    calib_cache: Path | None = None  # reuse a bundle's calibration_cache.json instead of calibrating
    block_size: int = 32
    max_accuracy_drop: float | None = None  # None: the mode's default
    allow_accuracy_drop: bool = False
    eval_limit: int | None = None  # None: the whole held-out set
    eval_file: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.method is not None and self.method not in METHODS[self.mode]:
            raise ValueError(f"method for {self.mode} must be one of {METHODS[self.mode]}, got {self.method!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {self.block_size}")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop must be >= 0 points, got {self.max_accuracy_drop}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ValueError(f"eval_limit must be >= 1, got {self.eval_limit}")
        if self.calib_prompts is not None and self.calib_images is None:
            raise ValueError("calib_prompts needs calib_images (prompts are asked about the user's images)")
        if self.calib_cache is not None and self.mode != "int8":
            raise ValueError("calib_cache holds int8 activation ranges; it applies to mode int8 only")
        if self.bundle_dir.absolute() == self.out_dir.absolute():
            raise ValueError("out_dir must differ from bundle_dir (the source bundle is never modified)")

    @property
    def resolved_method(self) -> str:
        return self.method or DEFAULT_METHOD[self.mode]

    @property
    def resolved_max_drop(self) -> float:
        return DEFAULT_MAX_DROP[self.mode] if self.max_accuracy_drop is None else self.max_accuracy_drop
