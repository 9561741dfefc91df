"""Train the demo GLM-4V model on synthetic shapes, on CPU (or a CUDA GPU), resumable from checkpoints.

Recipe: (1) vision warm-up: every merged image token is supervised with the colour, the shape and
the box of the shape under it (throw-away heads), so the tiny vision tower learns shape and place;
(2) question answering end to end with the dense loss kept on as an auxiliary.

    python -m edgevlm.demo.train --run runs/demo --steps 6000 --warmup-vision 800
    python -m edgevlm.demo.train --run runs/gpu --device cuda --workers 12 ...   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgevlm.demo.checkpoint import adopt_newline_token, build_processor, new_model, save_checkpoint
from edgevlm.demo.questions import (
    COLOUR_ZH,
    COLOURS,
    LANGUAGES,
    PLURAL,
    QUESTION_TYPES,
    SHAPE_ZH,
    SHAPE_ZH_SHORT,
    SHAPES,
    Sample,
    ask,
    describe_item,
    format_box,
    is_correct,
    left_to_right,
    sample_for_index,
)
from edgevlm.demo.shapes import random_scene, render, shape_masks

MERGED_PX = 28  # one merged image token covers 28 x 28 pixels (patch 14 x merge 2)
COLOUR_IDS = {c: i + 1 for i, c in enumerate(COLOURS)}
SHAPE_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}


@dataclass(frozen=True, slots=True)
class TrainConfig:
    run: Path
    steps: int
    warmup_vision: int
    batch_size: int
    lr: float
    vision_lr: float
    dense_weight: float
    readout_weight: float
    ground_weight: float
    layout_weight: float
    question_weight: tuple[tuple[str, float], ...]  # (question type, weight in the answer loss)
    seed: int
    eval_every: int
    save_every: int
    threads: int
    init_from: Path | None
    device: str = "cpu"
    workers: int = 0  # processes that build batches ahead of the training step (0: in the loop)


class DenseHeads(nn.Module):
    """Per-token heads: colour, shape and box of the shape under each merged token.

    Colour and shape are scored by cosine similarity with the mean word embedding of their names
    (English and Chinese): merged image tokens are the language model's input embeddings, so this
    pulls an image token of a red circle towards the embeddings of "red"/"红色" and
    "circle"/"圆形", and the language model only has to copy what the question points at.
    """

    colour_english: torch.Tensor  # buffers (see __init__), typed for the checker
    shape_english: torch.Tensor

    def __init__(self, dim: int, colour_words: list[list[int]], shape_words: list[list[int]],
                 layout_weight: float = 0.0) -> None:
        super().__init__()
        self.colour_words = colour_words
        self.shape_words = shape_words
        # The English word of each class (plain tensors, not state): the read-out's targets.
        self.register_buffer("colour_english", torch.tensor([ids[0] for ids in colour_words]), persistent=False)
        self.register_buffer("shape_english", torch.tensor([ids[0] for ids in shape_words]), persistent=False)
        self.background = nn.Parameter(torch.randn(2, dim) * 0.02)  # "no shape here", per head
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.box = nn.Linear(dim, 4)
        # Read-out of the box's digits from the language model's hidden state at image tokens:
        # hundreds (0-10) and tens (0-9) of x1, y1, x2, y2.
        self.box_digits = nn.Linear(dim, 4 * 11 + 4 * 10)
        # The same digits from the image tokens as they enter the language model: a box answer
        # looks them up there (GROUND_HEADS), so they must be readable without further layers.
        self.vision_digits = nn.Linear(dim, 4 * 11 + 4 * 10)
        # Where the shape stands among the others, from the image tokens as they enter the
        # language model (see LAYOUT_TARGETS): a count answer then reads its number off any one
        # token of what it counts, and a description's k-th item looks for rank k, instead of the
        # language model counting distinct shapes with attention (which averages, not sums).
        self.layout = nn.Linear(dim, len(LAYOUT_TARGETS) * LAYOUT_CLASSES)
        self.layout_weight = layout_weight  # --layout-weight (runs 1-7 trained without it: 0)

    def readout_loss(self, logits: torch.Tensor, hidden: torch.Tensor,
                     targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """At every image token over a shape, the language model's own output (its last hidden state
        through lm_head) must name the shape and its colour (English words), and its hidden state
        must give the digits of the shape's box. The answer position then only has to attend to the
        right image token and pass on what is already readable there, instead of learning the
        read-out from one answer per question."""
        covered = targets["covered"]
        if not covered.any():
            return logits.sum() * 0.0
        logits = logits[covered]
        colour_ids = self.colour_english[targets["colour"][covered] - 1]
        shape_ids = self.shape_english[targets["shape"][covered] - 1]
        loss = nn.functional.cross_entropy(logits, colour_ids) + nn.functional.cross_entropy(logits, shape_ids)
        return loss + digits_loss(self.box_digits(hidden[covered].float()), targets["box"][covered])

    def _classes(self, embed: torch.Tensor, words: list[list[int]], background: torch.Tensor) -> torch.Tensor:
        names = torch.stack([embed[ids].mean(0) for ids in words])
        return nn.functional.normalize(torch.cat([background[None], names]), dim=-1)

    def loss(self, feats: torch.Tensor, targets: dict[str, torch.Tensor], embed: torch.Tensor) -> torch.Tensor:
        # feats: [tokens, dim]; colour/shape: [tokens]; box: [tokens, 4]; covered: [tokens] bool
        unit = nn.functional.normalize(feats.float(), dim=-1)
        colours = self._classes(embed, self.colour_words, self.background[0])
        shapes = self._classes(embed, self.shape_words, self.background[1])
        loss = nn.functional.cross_entropy(self.scale * unit @ colours.T, targets["colour"])
        loss = loss + nn.functional.cross_entropy(self.scale * unit @ shapes.T, targets["shape"])
        covered = targets["covered"]
        if covered.any():
            pred = torch.sigmoid(self.box(feats[covered].float()))
            loss = loss + 10.0 * nn.functional.smooth_l1_loss(pred, targets["box"][covered], beta=0.05)
            loss = loss + digits_loss(self.vision_digits(feats[covered].float()), targets["box"][covered])
            layout = self.layout(feats[covered].float()).reshape(-1, LAYOUT_CLASSES)
            wanted = torch.stack([targets[k][covered] for k in LAYOUT_TARGETS], dim=1).reshape(-1)
            loss = loss + self.layout_weight * nn.functional.cross_entropy(layout, wanted)
        return loss


# Per image token over a shape: its rank from the left (0-3, the order descriptions use), and how
# many shapes in the scene share its colour, share its kind, and exist at all (1-4).
LAYOUT_TARGETS = ("rank", "same_colour", "same_kind", "total")
LAYOUT_CLASSES = 5


def digits_loss(logits: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the hundreds (0-10) and tens (0-9) of a box's four 0-1000 coordinates.
    # logits: [tokens, 4 * 11 + 4 * 10]; box: [tokens, 4] in 0..1"""
    tens = torch.round(box * 100).long()  # in tens, 0..100
    hundreds_logits = logits[:, : 4 * 11].reshape(-1, 11)
    tens_logits = logits[:, 4 * 11 :].reshape(-1, 10)
    return (nn.functional.cross_entropy(hundreds_logits, (tens // 10).reshape(-1))
            + nn.functional.cross_entropy(tens_logits, (tens % 10).reshape(-1)))


def name_ids(tokenizer, english: str, chinese: str) -> list[int]:
    """Token ids of a class's English then Chinese name; the first is the English word."""
    return [i for name in (english, chinese) for i in tokenizer(name, add_special_tokens=False)["input_ids"]]


def dense_heads(model, tokenizer, layout_weight: float = 0.0) -> DenseHeads:
    colour_words = [name_ids(tokenizer, c, COLOUR_ZH[c]) for c in COLOURS]
    shape_words = [name_ids(tokenizer, k, SHAPE_ZH[k]) for k in SHAPES]
    return DenseHeads(model.config.text_config.hidden_size, colour_words, shape_words, layout_weight)


def dense_targets(sample: Sample) -> dict[str, np.ndarray]:
    """Per merged token (raster order over the 28-px grid): the shape covering most of the cell."""
    scene = sample.scene
    mask = shape_masks(scene)
    gh, gw = scene.height // MERGED_PX, scene.width // MERGED_PX
    cells = mask.reshape(gh, MERGED_PX, gw, MERGED_PX).transpose(0, 2, 1, 3).reshape(gh * gw, -1)
    colour = np.zeros(gh * gw, np.int64)
    kind = np.zeros(gh * gw, np.int64)
    box = np.zeros((gh * gw, 4), np.float32)
    instance = np.zeros(gh * gw, np.int64)
    layout = {name: np.zeros(gh * gw, np.int64) for name in LAYOUT_TARGETS}
    shapes = scene.shapes
    rank = {index: r for r, index in enumerate(left_to_right(shapes))}
    for index, shape in enumerate(shapes):
        share = (cells == index + 1).mean(axis=1)
        hit = share >= 0.2
        instance[hit] = index + 1
        colour[hit] = COLOUR_IDS[shape.colour]
        kind[hit] = SHAPE_IDS[shape.kind]
        box[hit] = np.array(scene.box_1000(shape), np.float32) / 1000.0
        layout["rank"][hit] = rank[index]
        layout["same_colour"][hit] = sum(s.colour == shape.colour for s in shapes)
        layout["same_kind"][hit] = sum(s.kind == shape.kind for s in shapes)
        layout["total"][hit] = len(shapes)
    return {"colour": colour, "shape": kind, "box": box, "covered": kind > 0, "instance": instance, **layout}


def counted(sample: Sample) -> tuple[list[str], list[str]]:
    """The colours and shape kinds a count question names (none: it counts every shape), read from
    its words: English names (plurals contain them) or the Chinese short names (圆 is in 圆形)."""
    question = sample.question.lower()
    colours = [c for c in COLOURS if c in question or COLOUR_ZH[c] in question]
    kinds = [k for k in SHAPES if k in question or SHAPE_ZH_SHORT[k] in question]
    return colours, kinds


def asked_words(sample: Sample) -> set[str]:
    """The question's words (English) or characters (Chinese) that say which shape to look at: the
    shape for a colour question, the colour for a shape question, both for a box, what a count
    counts. Empty for descriptions and for "how many shapes"."""
    if sample.target is not None:
        named = {"colour": [sample.target.kind], "shape": [sample.target.colour],
                 "box": [sample.target.colour, sample.target.kind]}[sample.qtype]
    elif sample.qtype == "count":
        colours, kinds = counted(sample)
        named = colours + kinds
    else:
        return set()
    if sample.lang == "en":
        return {w for name in named for w in (name, PLURAL.get(name, name))}
    chinese = [COLOUR_ZH.get(name) or (SHAPE_ZH_SHORT[name] if sample.qtype == "count" else SHAPE_ZH[name])
               for name in named]
    return {ch for word in chinese for ch in word}


def grounded_shapes(sample: Sample) -> list[int]:
    """Indices (into scene.shapes) of the shapes a question is about: the one it names, or the ones
    it counts. Empty for descriptions and for counts of nothing."""
    shapes = sample.scene.shapes
    if sample.target is not None:
        return [i for i, s in enumerate(shapes) if s == sample.target][:1]
    if sample.qtype != "count" or sample.answer == "0":
        return []
    colours, kinds = counted(sample)
    return [i for i, s in enumerate(shapes)
            if (not colours or s.colour in colours) and (not kinds or s.kind in kinds)]


# Boxes are the slowest type to learn (12 digits to get right, not one word): by default their
# questions count double in the question-answering loss (--question-weight moves the stress to
# whichever types lag).
QUESTION_WEIGHT = "box=2"


def question_weights(text: str) -> tuple[tuple[str, float], ...]:
    """"box=2,count=1.5" -> (("box", 2.0), ("count", 1.5)); unknown types are refused."""
    pairs = []
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in QUESTION_TYPES:
            raise argparse.ArgumentTypeError(f"unknown question type {name!r} (one of {', '.join(QUESTION_TYPES)})")
        pairs.append((name, float(value)))
    return tuple(pairs)


class Batcher:
    """Turns scenes' question groups into model inputs with the real GLM-4V processor.

    All questions about one scene are packed into one multi-turn conversation (image once, then
    question/answer turns), so the image tokens pass through the language model once per scene
    instead of once per question: ~4x less language-model work per answer. The first turn is
    exactly the single-question format that eval and serving use.
    """

    def __init__(self, question_weight: tuple[tuple[str, float], ...] = question_weights(QUESTION_WEIGHT)) -> None:
        self.question_weight = dict(question_weight)
        self.processor = build_processor()
        self.tokenizer = self.processor.tokenizer
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def prompt(self, sample: Sample) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _conversation(self, group: list[Sample], image_tokens: int) -> tuple[list[int], list[int], list[int]]:
        """Token ids of the packed conversation; per token the index of the question it answers
        (-1: none), and the index of the question it is a word of (-1: none)."""
        first = self.prompt(group[0]).replace("<|image|>", "<|image|>" * image_tokens)
        head, tail = first.split(group[0].question)
        ids: list[int] = []
        owner: list[int] = []
        asker: list[int] = []
        for turn, sample in enumerate(group):
            before, after = (head, tail) if turn == 0 else ("<|user|>\n", "<|assistant|>\n")
            for text, who in ((before, -1), (sample.question, turn), (after, -1)):
                piece = self._ids(text)
                ids += piece
                owner += [-1] * len(piece)
                asker += [who] * len(piece)
            answer = self._ids(sample.answer) + [self.end_id]
            ids += answer
            owner += [turn] * len(answer)
            asker += [-1] * len(answer)
        return ids, owner, asker

    def _ground(self, group: list[Sample], ids: np.ndarray, owner: np.ndarray, targets: dict) -> np.ndarray:
        """[T, T] bool: row p is a position that predicts an answer token, column j an image token
        of a shape that token is about (see answer_grounding)."""
        width = len(ids)
        ground = np.zeros((width, width), bool)
        image_positions = np.flatnonzero(ids == self.processor.image_token_id)
        for turn, sample in enumerate(group):
            predicting = np.flatnonzero(owner[1:] == turn)  # position p predicts token p + 1
            per_token = self.answer_grounding(sample)
            for position, shapes in zip(predicting, per_token, strict=True):
                about = np.isin(targets["instance"], [i + 1 for i in shapes])
                ground[position, image_positions[about]] = True
        return ground

    def _asked(self, group: list[Sample], ids: np.ndarray, owner: np.ndarray, asker: np.ndarray) -> np.ndarray:
        """[T, T] bool: row p predicts an answer token, column j is a word of that turn's question
        that names what to look for (see asked_words)."""
        width = len(ids)
        asked = np.zeros((width, width), bool)
        for turn, sample in enumerate(group):
            words = asked_words(sample)
            if not words:
                continue
            mine = np.flatnonzero(asker == turn)
            keys = [j for j in mine if self.tokenizer.decode([int(ids[j])]).strip().lower() in words]
            predicting = np.flatnonzero(owner[1:] == turn)
            asked[np.ix_(predicting, keys)] = True
        return asked

    def answer_grounding(self, sample: Sample) -> list[list[int]]:
        """For every answer token (and the end token) the shapes it is about. A description's
        k-th item is about the k-th shape from the left; its opening (the count) about all."""
        length = len(self._ids(sample.answer)) + 1
        if sample.qtype != "describe":
            return [grounded_shapes(sample)] * length
        shapes = sample.scene.shapes
        everything = list(range(len(shapes)))
        per_token: list[list[int]] = []
        text_end = 0
        for index in left_to_right(shapes):
            phrase = describe_item(shapes[index], sample.lang)
            start = sample.answer.index(phrase, text_end)
            text_end = start + len(phrase)
            if not per_token:  # the opening ("There are 3 shapes:") counts them all
                per_token = [everything] * len(self._ids(sample.answer[:start]))
            per_token += [[index]] * (len(self._ids(sample.answer[:text_end])) - len(per_token))
        return per_token + [everything] * (length - len(per_token))

    def __call__(self, groups: list[list[Sample]]) -> dict[str, torch.Tensor]:
        images = [render(group[0].scene) for group in groups]
        vision = self.processor.image_processor(images=images, return_tensors="np")
        grids = np.asarray(vision["image_grid_thw"])
        # The processor's own rule: one <|image|> per merged token (grid product / merge^2).
        rows = [self._conversation(group, int(grid.prod() // 4)) for group, grid in zip(groups, grids, strict=True)]
        width = max(len(ids) for ids, _, _ in rows)
        input_ids = np.zeros((len(rows), width), np.int64)
        owner = np.full((len(rows), width), -1, np.int64)
        asker = np.full((len(rows), width), -1, np.int64)
        attention = np.zeros((len(rows), width), np.int64)
        offset = 0
        for i, (ids, own, ask_) in enumerate(rows):
            input_ids[i, : len(ids)] = ids
            asker[i, : len(ask_)] = ask_
            own_arr = np.asarray(own)
            # Question ids are global over the batch so the loss can average per question.
            owner[i, : len(own)] = np.where(own_arr >= 0, own_arr + offset, -1)
            offset += len(groups[i])
            attention[i, : len(ids)] = 1
        targets = [dense_targets(group[0]) for group in groups]
        weights = [self.question_weight.get(s.qtype, 1.0) for group in groups for s in group]
        starts = np.cumsum([0] + [len(group) for group in groups])
        local = [np.where(owner[i] >= 0, owner[i] - starts[i], -1) for i in range(len(groups))]
        ground = np.stack([self._ground(group, input_ids[i], local[i], targets[i]) for i, group in enumerate(groups)])
        asked = np.stack([self._asked(group, input_ids[i], local[i], asker[i]) for i, group in enumerate(groups)])
        return {
            "ground": torch.from_numpy(ground),
            "asked": torch.from_numpy(asked),
            "input_ids": torch.from_numpy(input_ids),
            "owner": torch.from_numpy(owner),
            "question_weight": torch.tensor(weights, dtype=torch.float32),
            "num_questions": torch.tensor(offset),
            "attention_mask": torch.from_numpy(attention),
            "mm_token_type_ids": torch.from_numpy((input_ids == self.processor.image_token_id).astype(np.int64)),
            "pixel_values": torch.from_numpy(np.asarray(vision["pixel_values"])),
            "image_grid_thw": torch.from_numpy(grids),
            **{k: torch.from_numpy(np.concatenate([t[k] for t in targets])) for k in targets[0]},
        }


# Training boxes are rounded to tens: the last digit is then always 0 (one thing less to learn)
# and the box moves at most 5/1000 per side, far inside the IoU >= 0.5 the eval asks for.
BOX_ROUNDING = 10


def _train_answer(sample: Sample) -> Sample:
    if sample.qtype != "box" or sample.target is None:
        return sample
    box = tuple(round(v / BOX_ROUNDING) * BOX_ROUNDING for v in sample.scene.box_1000(sample.target))
    return Sample(sample.seed, sample.qtype, sample.lang, sample.question, format_box(box), sample.scene, sample.target)  # type: ignore[arg-type]


def scene_questions(index: int) -> list[Sample]:
    """Every question type about one training scene, each in a random language, in random order.

    The description comes last: it names every shape, so a later question could be answered
    from it without looking at the image.
    """
    seed = index * 7 + 3  # train scene seeds stay far below the held-out set's
    scene = random_scene(seed)
    rng = random.Random(seed ^ 0xA5A5)
    group = []
    for qtype in QUESTION_TYPES:
        lang = rng.choice(LANGUAGES)
        asked = ask(rng, scene, qtype, lang)
        if asked is not None:
            group.append(_train_answer(Sample(seed, qtype, lang, asked[0], asked[1], scene, asked[2])))
    head = [s for s in group if s.qtype != "describe"]
    rng.shuffle(head)
    return head + [s for s in group if s.qtype == "describe"]


def forward_losses(model, heads: DenseHeads, batch: dict[str, torch.Tensor], with_qa: bool):
    inner = model.model
    vision = inner.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    merged = vision.pooler_output  # [image tokens, hidden]
    embed_weight = inner.language_model.embed_tokens.weight
    dense = heads.loss(merged, {k: batch[k] for k in ("colour", "shape", "box", "covered", *LAYOUT_TARGETS)},
                       embed_weight)
    if not with_qa:
        return {"dense": dense}
    ids = batch["input_ids"]
    embeds = inner.language_model.embed_tokens(ids)
    image_mask = (ids == model.config.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(image_mask, merged.to(embeds.dtype))
    position_ids, _ = inner.get_rope_index(
        ids, batch["mm_token_type_ids"], batch["image_grid_thw"], attention_mask=batch["attention_mask"]
    )
    out = inner.language_model(
        inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=position_ids,
        output_attentions=True,
    )
    hidden = out.last_hidden_state
    # Position t predicts token t+1; average per question first so long answers (boxes,
    # descriptions) don't drown the one-word ones.
    owner = batch["owner"][:, 1:]
    picked = owner >= 0
    targets = ids[:, 1:][picked]
    logits = model.lm_head(hidden[:, :-1][picked]).float()
    token_loss = nn.functional.cross_entropy(logits, targets, reduction="none")
    question = owner[picked]
    count = int(batch["num_questions"])
    per_q = token_loss.new_zeros(count).index_add_(0, question, token_loss)
    per_q = per_q / token_loss.new_zeros(count).index_add_(0, question, torch.ones_like(token_loss)).clamp(min=1)
    image_hidden = hidden[image_mask.squeeze(-1)]
    readout = heads.readout_loss(model.lm_head(image_hidden).float(), image_hidden, batch)
    weight = batch["question_weight"]
    ground = grounding_loss(out.attentions, batch["ground"], GROUND_HEADS)
    ground = ground + grounding_loss(out.attentions, batch["asked"], ASK_HEADS)
    return {"dense": dense, "qa": (per_q * weight).sum() / weight.sum(), "readout": readout, "ground": ground}


# (layer, query head) pairs whose attention is supervised to land on the shapes a question is about.
# Layer 0 can only read the question words into the answer position; from layer 1 on the query
# knows what was asked, so the look-up is taught there and the layers after it decode the answer.
GROUND_HEADS: tuple[tuple[int, int], ...] = ((1, 0), (2, 0))
# The first hop: in layer 0, these heads read the question's key words (asked_words) into every
# answer position, so the look-up heads' queries say what to look for. Without it, half of a
# look-up head's attention fell on the scene's other shapes and colour answers named their colours.
ASK_HEADS: tuple[tuple[int, int], ...] = ((0, 0), (0, 2))


def grounding_loss(attentions: tuple[torch.Tensor, ...], ground: torch.Tensor,
                   heads: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """-log of the attention mass each supervised head puts on the tokens `ground` marks (the
    asked-about shapes' image tokens, or the question's key words), averaged over answer
    positions. A probe showed every image token already knows its shape and colour (99.8 %); what
    the language model had not learned was where to look."""
    rows = ground.any(-1)  # [B, T]
    if not rows.any():
        return attentions[0].sum() * 0.0
    losses = []
    for layer, head in heads:
        probs = attentions[layer][:, head]  # [B, T, T]
        mass = (probs * ground).sum(-1)[rows]
        losses.append(-torch.log(mass.float() + 1e-6).mean())
    return torch.stack(losses).mean()


def lr_at(step: int, cfg: TrainConfig, base: float) -> float:
    warm = 100
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, cfg.steps - warm)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def quick_eval(model, batcher: Batcher, count: int) -> dict[str, float]:
    """Greedy answers on the first `count` held-out questions, accuracy per type."""
    from edgevlm.demo.questions import HELDOUT_OFFSET

    model.eval()
    right: dict[str, list[int]] = {}
    with torch.no_grad():
        for i in range(count):
            sample = sample_for_index(i, HELDOUT_OFFSET)
            enc = batcher.processor(text=[batcher.prompt(sample)], images=[render(sample.scene)], return_tensors="pt")
            enc = enc.to(model.device)
            out = model.generate(**enc, max_new_tokens=64, do_sample=False)
            text = batcher.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)
            text = text.split("<|endoftext|>")[0]
            right.setdefault(sample.qtype, []).append(int(is_correct(sample, text)))
    model.train()
    scores = {k: sum(v) / len(v) for k, v in right.items()}
    scores["overall"] = sum(sum(v) for v in right.values()) / count
    return scores


def _start(cfg: TrainConfig, model, heads: DenseHeads, optim) -> tuple[int, int, float]:
    """(step, scenes seen, seconds trained): resume this run, or start from --init-from's weights."""
    state_path = cfg.run / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False, map_location="cpu")
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        optim.load_state_dict(state["optim"])
        print(f"resumed at step {state['step']} ({state['elapsed'] / 60:.1f} min trained)", flush=True)
        return state["step"], state["seen"], state["elapsed"]
    if cfg.init_from is not None:
        # The model's weights (and the heads' that still fit) carry over; the optimiser starts
        # fresh, and the scene stream continues where the earlier run stopped.
        state = torch.load(cfg.init_from, weights_only=False, map_location="cpu")
        model.load_state_dict(state["model"])
        if not state.get("newline_token", False):  # saved before "\n" was a token
            adopt_newline_token(model)
        heads.load_state_dict(_fitting(heads, state.get("heads", {})), strict=False)
        print(f"initialised from {cfg.init_from} (step {state['step']})", flush=True)
        return 0, state["seen"], 0.0
    return 0, 0, 0.0


def _optimiser(cfg: TrainConfig, model, heads: DenseHeads) -> torch.optim.Optimizer:
    """AdamW with the vision tower (and the dense heads) in their own learning-rate group."""
    vision_params = list(model.model.visual.parameters()) + list(heads.parameters())
    vision_ids = {id(p) for p in vision_params}
    text_params = [p for p in model.parameters() if id(p) not in vision_ids]
    return torch.optim.AdamW(
        [{"params": vision_params, "lr": cfg.vision_lr}, {"params": text_params, "lr": cfg.lr}],
        weight_decay=0.01,
        betas=(0.9, 0.98),
    )


def _step(cfg: TrainConfig, model, heads: DenseHeads, optim, batch: dict, step: int) -> dict[str, float]:
    with_qa = step >= cfg.warmup_vision
    for group, base in zip(optim.param_groups, (cfg.vision_lr, cfg.lr), strict=True):
        group["lr"] = lr_at(step, cfg, base)
    # fp32: bf16 autocast is ~20x slower for this model on CPU (conv3d/grid_sample fall back).
    losses = forward_losses(model, heads, batch, with_qa)
    loss = cfg.dense_weight * losses["dense"]
    if with_qa:
        loss = loss + losses["qa"] + cfg.readout_weight * losses["readout"] + cfg.ground_weight * losses["ground"]
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    return {name: round(value.item(), 4) for name, value in losses.items()}


def _record(log, record: dict) -> None:
    print(json.dumps(record), flush=True)
    log.write(json.dumps(record) + "\n")
    log.flush()


def _fitting(module: nn.Module, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    own = module.state_dict()
    return {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}


def train(cfg: TrainConfig) -> None:
    torch.set_num_threads(cfg.threads)
    cfg.run.mkdir(parents=True, exist_ok=True)
    model = new_model(cfg.seed)
    # The grounding loss reads the language model's attention probabilities: eager attention there
    # (SDPA does not return them); the vision tower keeps SDPA.
    model.config.text_config._attn_implementation = "eager"
    batcher = Batcher(cfg.question_weight)
    heads = dense_heads(model, batcher.tokenizer, cfg.layout_weight)
    model.to(cfg.device)
    heads.to(cfg.device)
    optim = _optimiser(cfg, model, heads)
    step, seen, elapsed = _start(cfg, model, heads, optim)
    model.train()
    started = time.time() - elapsed
    stream = scene_batches(cfg, seen, cfg.steps - step)
    with (cfg.run / "log.jsonl").open("a") as log:
        while step < cfg.steps:
            batch = {k: v.to(cfg.device, non_blocking=True) for k, v in next(stream).items()}
            losses = _step(cfg, model, heads, optim, batch, step)
            step, seen = step + 1, seen + cfg.batch_size
            if step % 20 == 0:
                _record(log, {"step": step, "min": round((time.time() - started) / 60, 2), **losses})
            if step % cfg.eval_every == 0 and step > cfg.warmup_vision:
                _record(log, {"step": step, "eval": quick_eval(model, batcher, 100)})
            if step % cfg.save_every == 0 or step == cfg.steps:
                _save_state(cfg.run / "state.pt", model, heads, optim, step, seen, time.time() - started)
                save_checkpoint(model, cfg.run / "checkpoint")
    print(f"done: {step} steps in {(time.time() - started) / 60:.1f} min", flush=True)


class SceneBatches(torch.utils.data.Dataset):
    """Batch k of a run's remaining steps: the scenes from `first_scene + k * batch_size` on. A
    pure function of k, so worker processes can build batches ahead and the stream stays the one
    the training loop would have built itself."""

    def __init__(self, first_scene: int, batch_size: int, steps: int,
                 question_weight: tuple[tuple[str, float], ...]) -> None:
        self.first_scene, self.batch_size, self.steps = first_scene, batch_size, steps
        self.question_weight = question_weight
        self._batcher: Batcher | None = None  # built in the process that uses it

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        if self._batcher is None:
            self._batcher = Batcher(self.question_weight)
        start = self.first_scene + k * self.batch_size
        return self._batcher([scene_questions(start + i) for i in range(self.batch_size)])


def scene_batches(cfg: TrainConfig, seen: int, steps: int) -> Iterator[dict[str, torch.Tensor]]:
    """The run's batches in order: built in the loop, or by --workers processes a few steps ahead
    (a GPU step is faster than one CPU core renders and tokenises a batch)."""
    data = SceneBatches(seen, cfg.batch_size, steps, cfg.question_weight)
    if cfg.workers == 0:
        return (data[k] for k in range(steps))
    # spawn, not fork: the parent already holds CUDA and torch's thread pools.
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=cfg.workers, prefetch_factor=2,
                                         multiprocessing_context="spawn", pin_memory=cfg.device.startswith("cuda"))
    return iter(loader)


def _save_state(path: Path, model, heads, optim, step: int, seen: int, elapsed: float) -> None:
    # Write then rename: a run killed mid-save keeps its previous checkpoint.
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "heads": heads.state_dict(), "optim": optim.state_dict(),
                "step": step, "seen": seen, "elapsed": elapsed, "newline_token": True}, tmp)
    tmp.replace(path)


def parse_args(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="folder for checkpoints and logs (resumes)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--warmup-vision", type=int, default=800, help="steps of vision-only dense training")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per step (all question types each)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vision-lr", type=float, default=1e-3)
    parser.add_argument("--dense-weight", type=float, default=0.5)
    parser.add_argument("--readout-weight", type=float, default=0.5,
                        help="weight of the language model's per-image-token colour/shape read-out")
    parser.add_argument("--ground-weight", type=float, default=0.5,
                        help="weight of the attention-grounding loss (ASK_HEADS look at the question's key "
                             "words, GROUND_HEADS at the asked-about shapes)")
    parser.add_argument("--layout-weight", type=float, default=0.0,
                        help="weight of the image tokens' layout heads (rank from the left, counts), in the dense loss")
    parser.add_argument("--question-weight", type=question_weights, default=question_weights(QUESTION_WEIGHT),
                        help=f"per-type weights in the answer loss, e.g. box=2,count=2 (default {QUESTION_WEIGHT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init-from", type=Path, help="state.pt of an earlier run: start from its model weights")
    parser.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    parser.add_argument("--workers", type=int, default=0, help="processes building batches ahead (0: in the loop)")
    a = parser.parse_args(argv)
    return TrainConfig(a.run, a.steps, a.warmup_vision, a.batch_size, a.lr, a.vision_lr, a.dense_weight,
                       a.readout_weight, a.ground_weight, a.layout_weight, a.question_weight, a.seed,
                       a.eval_every, a.save_every, a.threads, a.init_from, a.device, a.workers)


if __name__ == "__main__":
    random.seed(0)
    train(parse_args(sys.argv[1:]))
