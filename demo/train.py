"""Train the demo GLM-4V model on synthetic shapes, on CPU, resumable from checkpoints.

Recipe: (1) vision warm-up: every merged image token is supervised with the colour, the shape and
the box of the shape under it (throw-away heads), so the tiny vision tower learns shape and place;
(2) question answering end to end with the dense loss kept on as an auxiliary.

    python -m edgevlm.demo.train --run runs/demo --steps 6000 --warmup-vision 800
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgevlm.demo.checkpoint import build_processor, new_model, save_checkpoint
from edgevlm.demo.questions import (
    COLOURS,
    LANGUAGES,
    QUESTION_TYPES,
    SHAPES,
    Sample,
    ask,
    is_correct,
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
    seed: int
    eval_every: int
    save_every: int
    threads: int


class DenseHeads(nn.Module):
    """Throw-away per-token heads: colour, shape and box of the shape under each merged token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.colour = nn.Linear(dim, len(COLOURS) + 1)
        self.shape = nn.Linear(dim, len(SHAPES) + 1)
        self.box = nn.Linear(dim, 4)

    def loss(self, feats: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        # feats: [tokens, dim]; colour/shape: [tokens]; box: [tokens, 4]; covered: [tokens] bool
        feats = feats.float()
        loss = nn.functional.cross_entropy(self.colour(feats), targets["colour"])
        loss = loss + nn.functional.cross_entropy(self.shape(feats), targets["shape"])
        covered = targets["covered"]
        if covered.any():
            pred = torch.sigmoid(self.box(feats[covered]))
            loss = loss + 10.0 * nn.functional.smooth_l1_loss(pred, targets["box"][covered], beta=0.05)
        return loss


def dense_targets(sample: Sample) -> dict[str, np.ndarray]:
    """Per merged token (raster order over the 28-px grid): the shape covering most of the cell."""
    scene = sample.scene
    mask = shape_masks(scene)
    gh, gw = scene.height // MERGED_PX, scene.width // MERGED_PX
    cells = mask.reshape(gh, MERGED_PX, gw, MERGED_PX).transpose(0, 2, 1, 3).reshape(gh * gw, -1)
    colour = np.zeros(gh * gw, np.int64)
    kind = np.zeros(gh * gw, np.int64)
    box = np.zeros((gh * gw, 4), np.float32)
    for index, shape in enumerate(scene.shapes):
        share = (cells == index + 1).mean(axis=1)
        hit = share >= 0.2
        colour[hit] = COLOUR_IDS[shape.colour]
        kind[hit] = SHAPE_IDS[shape.kind]
        box[hit] = np.array(scene.box_1000(shape), np.float32) / 1000.0
    return {"colour": colour, "shape": kind, "box": box, "covered": kind > 0}


class Batcher:
    """Turns sample indices into model inputs with the real GLM-4V processor."""

    def __init__(self) -> None:
        self.processor = build_processor()
        self.tokenizer = self.processor.tokenizer
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def prompt(self, sample: Sample) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def __call__(self, groups: list[list[Sample]]) -> dict[str, torch.Tensor]:
        """Each group is several questions about one scene: the image is encoded once per group."""
        images = [render(group[0].scene) for group in groups]
        vision = self.processor.image_processor(images=images, return_tensors="np")
        grids = np.asarray(vision["image_grid_thw"])
        samples = [s for group in groups for s in group]
        image_of_row = np.array([g for g, group in enumerate(groups) for _ in group], np.int64)
        rows, labels = [], []
        for sample, g in zip(samples, image_of_row, strict=True):
            # The processor's own rule: one <|image|> per merged token (grid product / merge^2).
            prompt = self.prompt(sample).replace("<|image|>", "<|image|>" * int(grids[g].prod() // 4))
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer = self.tokenizer(sample.answer, add_special_tokens=False)["input_ids"] + [self.end_id]
            rows.append(list(ids) + answer)
            labels.append([-100] * len(ids) + answer)
        width = max(len(r) for r in rows)
        input_ids = np.zeros((len(rows), width), np.int64)
        label_ids = np.full((len(rows), width), -100, np.int64)
        attention = np.zeros((len(rows), width), np.int64)
        for i, (row, lab) in enumerate(zip(rows, labels, strict=True)):
            input_ids[i, : len(row)] = row
            label_ids[i, : len(lab)] = lab
            attention[i, : len(row)] = 1
        targets = [dense_targets(group[0]) for group in groups]
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(label_ids),
            "attention_mask": torch.from_numpy(attention),
            "mm_token_type_ids": torch.from_numpy((input_ids == self.processor.image_token_id).astype(np.int64)),
            "pixel_values": torch.from_numpy(np.asarray(vision["pixel_values"])),
            "image_grid_thw": torch.from_numpy(grids),
            "image_of_row": torch.from_numpy(image_of_row),
            **{k: torch.from_numpy(np.concatenate([t[k] for t in targets])) for k in targets[0]},
        }


def scene_questions(index: int) -> list[Sample]:
    """Every question type about one training scene, each in a random language."""
    seed = index * 7 + 3  # train scene seeds stay far below the held-out set's
    scene = random_scene(seed)
    rng = random.Random(seed ^ 0xA5A5)
    group = []
    for qtype in QUESTION_TYPES:
        lang = rng.choice(LANGUAGES)
        asked = ask(rng, scene, qtype, lang)
        if asked is not None:
            group.append(Sample(seed, qtype, lang, asked[0], asked[1], scene, asked[2]))
    return group


def forward_losses(model, heads: DenseHeads, batch: dict[str, torch.Tensor], with_qa: bool):
    inner = model.model
    vision = inner.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    merged = vision.pooler_output  # [image tokens, hidden]
    dense = heads.loss(merged, {k: batch[k] for k in ("colour", "shape", "box", "covered")})
    if not with_qa:
        return dense, torch.zeros(())
    ids = batch["input_ids"]
    rows_of = batch["image_of_row"]
    per_image = torch.split(merged, (batch["image_grid_thw"].prod(-1) // 4).tolist())
    row_feats = torch.cat([per_image[i] for i in rows_of.tolist()])
    embeds = inner.language_model.embed_tokens(ids)
    image_mask = (ids == model.config.image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(image_mask, row_feats.to(embeds.dtype))
    position_ids, _ = inner.get_rope_index(
        ids, batch["mm_token_type_ids"], batch["image_grid_thw"][rows_of], attention_mask=batch["attention_mask"]
    )
    hidden = inner.language_model(
        inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=position_ids
    ).last_hidden_state
    # Position t predicts token t+1; average per question first so long answers don't dominate.
    labels = batch["labels"][:, 1:]
    picked = labels != -100
    logits = model.lm_head(hidden[:, :-1][picked]).float()
    token_loss = nn.functional.cross_entropy(logits, labels[picked], reduction="none")
    row = picked.nonzero()[:, 0]
    per_row = torch.zeros(ids.shape[0]).index_add_(0, row, token_loss) / picked.sum(1).clamp(min=1)
    return dense, per_row.mean()


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
            out = model.generate(**enc, max_new_tokens=64, do_sample=False)
            text = batcher.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)
            text = text.split("<|endoftext|>")[0]
            right.setdefault(sample.qtype, []).append(int(is_correct(sample, text)))
    model.train()
    scores = {k: sum(v) / len(v) for k, v in right.items()}
    scores["overall"] = sum(sum(v) for v in right.values()) / count
    return scores


def train(cfg: TrainConfig) -> None:
    torch.set_num_threads(cfg.threads)
    cfg.run.mkdir(parents=True, exist_ok=True)
    state_path = cfg.run / "state.pt"
    model = new_model(cfg.seed)
    heads = DenseHeads(model.config.text_config.hidden_size)
    vision_params = list(model.model.visual.parameters()) + list(heads.parameters())
    vision_ids = {id(p) for p in vision_params}
    text_params = [p for p in model.parameters() if id(p) not in vision_ids]
    optim = torch.optim.AdamW(
        [{"params": vision_params, "lr": cfg.vision_lr}, {"params": text_params, "lr": cfg.lr}],
        weight_decay=0.01,
        betas=(0.9, 0.98),
    )
    step, seen, elapsed = 0, 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        optim.load_state_dict(state["optim"])
        step, seen, elapsed = state["step"], state["seen"], state["elapsed"]
        print(f"resumed at step {step} ({elapsed / 60:.1f} min trained)", flush=True)
    batcher = Batcher()
    model.train()
    log = (cfg.run / "log.jsonl").open("a")
    started = time.time() - elapsed
    while step < cfg.steps:
        with_qa = step >= cfg.warmup_vision
        for group, base in zip(optim.param_groups, (cfg.vision_lr, cfg.lr), strict=True):
            group["lr"] = lr_at(step, cfg, base)
        batch = batcher([scene_questions(seen + i) for i in range(cfg.batch_size)])
        seen += cfg.batch_size
        # fp32: bf16 autocast is ~20x slower for this model on CPU (conv3d/grid_sample fall back).
        dense, qa = forward_losses(model, heads, batch, with_qa)
        loss = qa + cfg.dense_weight * dense if with_qa else dense
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        step += 1
        if step % 20 == 0:
            record = {"step": step, "min": round((time.time() - started) / 60, 2), "dense": round(dense.item(), 4),
                      "qa": round(qa.item(), 4)}
            print(json.dumps(record), flush=True)
            log.write(json.dumps(record) + "\n")
            log.flush()
        if step % cfg.eval_every == 0 and with_qa:
            scores = quick_eval(model, batcher, 100)
            print(json.dumps({"step": step, "eval": scores}), flush=True)
            log.write(json.dumps({"step": step, "eval": scores}) + "\n")
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_state(state_path, model, heads, optim, step, seen, time.time() - started)
            save_checkpoint(model, cfg.run / "checkpoint")
    print(f"done: {step} steps in {(time.time() - started) / 60:.1f} min", flush=True)


def _save_state(path: Path, model, heads, optim, step: int, seen: int, elapsed: float) -> None:
    # Write then rename: a run killed mid-save keeps its previous checkpoint.
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "heads": heads.state_dict(), "optim": optim.state_dict(),
                "step": step, "seen": seen, "elapsed": elapsed}, tmp)
    tmp.replace(path)


def parse_args(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="folder for checkpoints and logs (resumes)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--warmup-vision", type=int, default=800, help="steps of vision-only dense training")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per step (all question types each)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vision-lr", type=float, default=1e-3)
    parser.add_argument("--dense-weight", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    a = parser.parse_args(argv)
    return TrainConfig(a.run, a.steps, a.warmup_vision, a.batch_size, a.lr, a.vision_lr, a.dense_weight, a.seed,
                       a.eval_every, a.save_every, a.threads)


if __name__ == "__main__":
    random.seed(0)
    train(parse_args(sys.argv[1:]))
