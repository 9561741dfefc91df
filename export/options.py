"""What one `edgevlm export` run is asked to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16")
# GridSample with mode "cubic" needs opset 16; 18 is the newest opset that every execution provider
# this project targets (ONNX Runtime CPU/CUDA, TensorRT 10) fully covers.
MIN_OPSET = 16
DEFAULT_OPSET = 18


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """Options of one export. `max_seq_len` None means the model's `max_position_embeddings`."""

    model_dir: Path
    out_dir: Path
    dtype: str = "fp32"
    max_batch: int = 16
    max_seq_len: int | None = None
    force: bool = False
    validate: bool = True
    opset: int = DEFAULT_OPSET

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {self.max_seq_len}")
        if self.dtype == "bf16" and self.validate:
            raise ValueError(
                "dtype bf16 cannot be validated on ONNX Runtime CPU (it has no bfloat16 MatMul kernels): "
                "pass --skip-validate"
            )
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset must be >= {MIN_OPSET} (bicubic GridSample), got {self.opset}")
