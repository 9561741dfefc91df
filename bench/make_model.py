"""`edgevlm bench make-model small`: a random-weight GLM-4V checkpoint of ~0.5 B parameters with the
demo tokenizer and processor, for benchmarks at a realistic size (answers are noise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevlm.errors import UserError

SIZES: dict[str, dict[str, Any]] = {
    # hidden 1024 x 16 layers (8 heads, 2 KV heads), GLM's 151552 vocabulary, vision 6 x 768.
    "small": {
        "text": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 16, "num_attention_heads": 8,
                 "num_key_value_heads": 2, "vocab_size": 151552, "mrope_section": [8, 12, 12]},
        "vision": {"hidden_size": 768, "depth": 6, "num_heads": 12, "intermediate_size": 3072},
    },
}


def config_for(size: str) -> Any:
    from transformers import Glm4vConfig

    from edgevlm.demo.checkpoint import demo_config_dict, special_token_ids
    from edgevlm.demo.tokenizer import build_tokenizer

    spec = SIZES[size]
    base: dict[str, Any] = demo_config_dict(spec["text"]["vocab_size"])
    text = {k: v for k, v in spec["text"].items() if k != "mrope_section"}
    base["text_config"].update(text)
    base["text_config"]["rope_parameters"]["mrope_section"] = spec["text"]["mrope_section"]
    base["vision_config"].update(spec["vision"], out_hidden_size=spec["text"]["hidden_size"])
    tokens: dict[str, Any] = special_token_ids()
    config: Any = Glm4vConfig(**base, **tokens)
    vocab = build_tokenizer().get_vocab()
    config.text_config.eos_token_id = [vocab["<|endoftext|>"], vocab["<|user|>"], vocab["<|observation|>"]]
    return config


def make_model(size: str, out_dir: Path, seed: int = 0, force: bool = False) -> int:
    """Write the checkpoint; returns its parameter count."""
    if size not in SIZES:
        raise UserError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if (out_dir / "config.json").exists() and not force:
        raise UserError(f"{out_dir} already holds a checkpoint (use --force to replace it)")
    import torch
    from transformers import Glm4vForConditionalGeneration

    from edgevlm.demo.checkpoint import save_checkpoint, set_attention

    torch.manual_seed(seed)
    model = Glm4vForConditionalGeneration(config_for(size)).eval()
    set_attention(model, "sdpa")
    save_checkpoint(model, out_dir)
    return sum(p.numel() for p in model.parameters())
