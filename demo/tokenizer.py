"""The demo model's word/char-level tokenizer with GLM-4V's special tokens and chat template."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from edgevlm.demo.questions import (
    COLOUR_ZH,
    EN_TEMPLATES,
    PLURAL,
    SHAPE_ZH,
    SHAPE_ZH_SHORT,
    ZH_TEMPLATES,
)
from edgevlm.demo.shapes import COLOURS, SHAPES

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<|begin_of_box|>",
    "<|end_of_box|>",
    "<think>",
    "</think>",
    "<unk>",
)
# Spaces become a marker glued to the next word, so decoding restores text exactly.
SPACE = "\u2581"
SPLIT_PATTERN = Regex(SPACE + r"?[a-z]+|" + SPACE + r"?\d|" + SPACE + r"?[^\sa-z\d" + SPACE + "]")

# GLM-4.xV's chat format: [gMASK]<sop>, role tags followed by a newline, images as
# begin/image/end, and the generation prompt "<|assistant|>\n".
CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'developer' -%}{%- set role = 'system' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "<|{{ role }}|>{{ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{{ '\\n' }}{%- endif -%}"
)


def _words() -> list[str]:
    """Every text fragment the generator can produce, split the way the tokenizer splits it."""
    texts: list[str] = []
    for table in (EN_TEMPLATES, ZH_TEMPLATES):
        for templates in table.values():
            texts.extend(templates)
    texts += list(COLOURS) + list(SHAPES) + list(PLURAL.values())
    texts += list(COLOUR_ZH.values()) + list(SHAPE_ZH.values()) + list(SHAPE_ZH_SHORT.values())
    texts += ["there is a shape: and , . there are shapes", "图中有个图形：、和。", "[0123456789,]"]
    texts += ["yes no the a an of in image picture left right top bottom middle 是 否 左 右 上 下 中 间"]
    texts += ["0123456789 :;!?()[]{}-+/*=<>'\"@#$%&_|~^`\\"]
    return texts


def build_vocab() -> dict[str, int]:
    pre = _pre_tokenizer()
    norm = _normalizer()
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    pieces: set[str] = set()
    for text in _words():
        for variant in (text, " " + text):
            for piece, _ in pre.pre_tokenize_str(norm.normalize_str(variant)):
                pieces.add(piece)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789":
        pieces.update({ch, SPACE + ch})
    for piece in sorted(pieces):
        vocab.setdefault(piece, len(vocab))
    # The newline after every role tag. Added after the first trained models, so it comes last and
    # every earlier id is unchanged (before it, "\n" encoded as <unk>; see adopt_newline_token).
    vocab.setdefault("\n", len(vocab))
    return vocab


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(" ", SPACE)])


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(SPLIT_PATTERN, behavior="isolated")


def build_tokenizer() -> Tokenizer:
    """A fast tokenizer whose special tokens carry GLM's names."""
    tokenizer = Tokenizer(models.WordLevel(vocab=build_vocab(), unk_token="<unk>"))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.Replace(SPACE, " ")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer
