"""The demo model's architecture and how its folder is written (same layout as a real GLM-4V checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgevlm.demo.hf_compat import expose_video_processor_base
from edgevlm.demo.tokenizer import CHAT_TEMPLATE, build_tokenizer

# Images are resized into 112x112 .. 448x448 (256 image tokens). GLM's processor counts pixels over
# the temporal patch of 2 frames, hence the factor 2.
MIN_PIXELS = 2 * 112 * 112
MAX_PIXELS = 2 * 448 * 448
DEMO_DIR = Path(__file__).resolve().parent / "model"


def demo_config_dict(vocab_size: int) -> dict[str, Any]:
    """GLM-4.6V-Flash's structure (GQA, partial rotary 0.5 with 3-section M-RoPE, attention bias,
    patch 14 / temporal 2 / merge 2) scaled down to ~5.5 M parameters."""
    return {
        "model_type": "glm4v",
        "architectures": ["Glm4vForConditionalGeneration"],
        "text_config": {
            "model_type": "glm4v_text",
            "vocab_size": vocab_size,
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "mrope_section": [4, 6, 6],
            },
            "pad_token_id": 0,
        },
        "vision_config": {
            "model_type": "glm4v_vision",
            "hidden_size": 192,
            "depth": 4,
            "num_heads": 4,
            "intermediate_size": 512,
            "out_hidden_size": 256,
            "image_size": 336,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "axial", "rope_theta": 10000.0},
        },
        "tie_word_embeddings": False,
    }


def special_token_ids() -> dict[str, int]:
    vocab = build_tokenizer().get_vocab()
    return {
        "image_token_id": vocab["<|image|>"],
        "video_token_id": vocab["<|video|>"],
        "image_start_token_id": vocab["<|begin_of_image|>"],
        "image_end_token_id": vocab["<|end_of_image|>"],
        "video_start_token_id": vocab["<|begin_of_video|>"],
        "video_end_token_id": vocab["<|end_of_video|>"],
    }


def demo_config():  # -> Glm4vConfig (torch side only)
    from transformers import Glm4vConfig

    tokenizer = build_tokenizer()
    vocab_size = (tokenizer.get_vocab_size() + 15) // 16 * 16
    config = Glm4vConfig(**demo_config_dict(vocab_size), **special_token_ids())
    vocab = tokenizer.get_vocab()
    config.text_config.eos_token_id = [vocab["<|endoftext|>"], vocab["<|user|>"], vocab["<|observation|>"]]
    return config


def build_processor():
    """Glm4vProcessor from the demo tokenizer and the numpy (PIL) image processor: no torchvision."""
    from transformers import Glm4vImageProcessorPil, Glm4vProcessor, PreTrainedTokenizerFast
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

    expose_video_processor_base()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    image_processor = Glm4vImageProcessorPil(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
    )
    return Glm4vProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Glm4vVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def new_model(seed: int = 0):
    """A freshly initialised demo model (random weights)."""
    import torch
    from transformers import Glm4vForConditionalGeneration

    torch.manual_seed(seed)
    config = demo_config()
    model = Glm4vForConditionalGeneration(config)
    set_attention(model, "sdpa")
    # The merger (no skip connection) at std 0.02 washes out position and sign: use fan-in scaling.
    for module in model.model.visual.merger.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=module.weight.shape[1] ** -0.5)
    return model


def set_attention(model, implementation: str) -> None:
    """SDPA is ~3x faster than eager on CPU for the vision tower's long per-image sequences."""
    for config in (model.config, model.config.text_config, model.config.vision_config):
        config._attn_implementation = implementation


def adopt_newline_token(model) -> bool:
    """Give a model trained before the vocabulary had "\n" the rows that make it answer exactly as
    before: its "\n" embedding and output rows become copies of <unk>'s, which every newline in
    the chat template encoded to then. Returns whether rows were copied (False: they already were).
    The id lies in the padding rows of the embedding table (vocab_size is rounded up to 16), so
    no shape changes."""
    import torch

    vocab = build_tokenizer().get_vocab()
    newline, unknown = vocab["\n"], vocab["<unk>"]
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    if torch.equal(embed[newline], embed[unknown]):
        return False
    with torch.no_grad():
        embed[newline] = embed[unknown]
        head[newline] = head[unknown]
    return True


def save_checkpoint(model, out_dir: Path) -> None:
    """Write a folder that loads offline through the Auto classes, like a real checkpoint."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_processor().save_pretrained(out_dir)
    generation = {"eos_token_id": model.config.text_config.eos_token_id, "pad_token_id": 0, "do_sample": False}
    import json

    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
