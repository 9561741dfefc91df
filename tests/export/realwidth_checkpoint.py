"""Write a random-weight checkpoint with GLM-4.6V-Flash's real widths but 1 text layer and 1 vision
block, in fp16 (~3.4 GB). Run as a script (its own process, so its memory is gone afterwards):

    python tests/export/realwidth_checkpoint.py OUT_DIR

The model is built on the meta device and materialised directly in fp16, weights drawn in place
(no float32 copy, no second copy). Non-persistent buffers (rotary inv_freq) are left unset: they
are not saved, and loading recomputes them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgevlm.demo.checkpoint import build_processor, demo_config_dict, special_token_ids
from edgevlm.demo.tokenizer import build_tokenizer

TEXT = {
    "vocab_size": 151552,
    "hidden_size": 4096,
    "intermediate_size": 13696,
    "num_hidden_layers": 1,
    "num_attention_heads": 32,
    "num_key_value_heads": 2,
    "max_position_embeddings": 65536,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0, "partial_rotary_factor": 0.5,
                        "mrope_section": [8, 12, 12]},
}
VISION = {"hidden_size": 1536, "depth": 1, "num_heads": 12, "intermediate_size": 13696, "out_hidden_size": 4096,
          "patch_size": 14, "image_size": 336}


def real_width_config():  # -> Glm4vConfig
    from transformers import Glm4vConfig

    config = demo_config_dict(TEXT["vocab_size"])
    config["text_config"].update(TEXT)
    config["vision_config"].update(VISION)
    glm = Glm4vConfig(**config, **special_token_ids())
    vocab = build_tokenizer().get_vocab()
    glm.text_config.eos_token_id = [vocab["<|endoftext|>"], vocab["<|user|>"], vocab["<|observation|>"]]
    return glm


def build(out_dir: Path) -> None:
    import torch
    from transformers import Glm4vForConditionalGeneration

    torch.manual_seed(0)
    with torch.device("meta"):
        model = Glm4vForConditionalGeneration(real_width_config()).to(torch.float16)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.dim() == 1:  # RMSNorm / LayerNorm scales
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_processor().save_pretrained(out_dir)
    eos = model.config.text_config.eos_token_id
    (out_dir / "generation_config.json").write_text(f'{{"eos_token_id": {eos}, "pad_token_id": 0}}\n')


if __name__ == "__main__":
    build(Path(sys.argv[1]))
