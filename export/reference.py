"""The parity gate's float32 reference, built from a model loaded in a lower precision (fp16/bf16).

`model.float()` would hold a float32 copy of every weight: twice the model's bytes on top of the
loaded (memory-mapped) ones. Instead every Linear and the token embedding keep their stored
weights and compute in float32, widening one chunk of the matrix at a time; the remaining small
modules (norms, convolutions, the vision position table) are widened in place. The arithmetic is
float32 throughout on exactly the exported weights, at ~1x the model's bytes plus one chunk.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CHUNK_BYTES = 256 << 20  # float32 bytes of weight widened at once


class Float32Linear(nn.Module):
    """`nn.Linear` in float32 over weights stored in a lower precision."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        # Plain tensor attributes, not parameters: `module.float()` leaves them as stored.
        self.stored = linear.weight.detach()
        self.bias32 = None if linear.bias is None else linear.bias.detach().float()
        self.rows = max(1, CHUNK_BYTES // (4 * linear.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]; output columns are independent, so chunking rows is exact
        x = x.float()
        out = torch.cat([F.linear(x, chunk.float()) for chunk in self.stored.split(self.rows)], dim=-1)
        return out if self.bias32 is None else out + self.bias32


class Float32Embedding(nn.Module):
    """`nn.Embedding` that gathers stored rows and widens only those."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.stored = embedding.weight.detach()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: [...] -> [..., hidden]
        return F.embedding(ids, self.stored).float()


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def float32_reference(model: Any) -> Any:
    """Turn a Glm4vForConditionalGeneration (any dtype) into a float32-computing one, in place."""
    if all(p.dtype == torch.float32 for p in model.parameters()):
        return model
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear):
            _replace(model, name, Float32Linear(module))
    text = model.model.language_model
    text.embed_tokens = Float32Embedding(text.embed_tokens)
    return model.float()
