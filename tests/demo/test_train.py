"""The demo trainer: packed conversations put the loss on exactly the answers, dense targets match
what is drawn, and a run saves, resumes and continues the scene stream."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgevlm.demo.questions import parse_box
from edgevlm.demo.shapes import iou
from edgevlm.demo.train import Batcher, TrainConfig, dense_targets, scene_questions, train


def test_packed_conversation_labels_exactly_the_answers() -> None:
    batcher = Batcher()
    groups = [scene_questions(i) for i in (11, 12)]
    batch = batcher(groups)
    ids, owner = batch["input_ids"].numpy(), batch["owner"].numpy()
    assert int(batch["num_questions"]) == sum(len(g) for g in groups)
    flat = [s for g in groups for s in g]
    for q, sample in enumerate(flat):
        row = next(i for i in range(len(groups)) if (owner[i] == q).any())
        answer = batcher.tokenizer.decode(ids[row][owner[row] == q].tolist(), skip_special_tokens=False)
        expected = batcher.tokenizer(sample.answer, add_special_tokens=False)["input_ids"] + [batcher.end_id]
        assert answer == batcher.tokenizer.decode(expected, skip_special_tokens=False)
    # One image per conversation: its tokens appear once per row, before any answer.
    image_id = batcher.processor.image_token_id
    grid_tokens = (batch["image_grid_thw"].prod(-1) // 4).tolist()
    assert [(row == image_id).sum() for row in ids] == grid_tokens


def test_description_comes_last_and_boxes_are_rounded_to_tens() -> None:
    for index in range(30):
        group = scene_questions(index)
        kinds = [s.qtype for s in group]
        assert kinds[-1] == "describe" and kinds.count("describe") == 1
        for sample in group:
            if sample.qtype == "box":
                box = parse_box(sample.answer)
                assert box is not None and all(v % 10 == 0 for v in box)
                assert iou(box, sample.scene.box_1000(sample.target)) > 0.8


def test_dense_targets_follow_the_drawing() -> None:
    sample = scene_questions(5)[0]
    targets = dense_targets(sample)
    scene = sample.scene
    assert targets["colour"].shape == ((scene.height // 28) * (scene.width // 28),)
    covered = targets["covered"]
    assert covered.any() and not covered.all()
    assert (targets["colour"][covered] > 0).all() and (targets["colour"][~covered] == 0).all()
    assert np.all((targets["box"][covered] >= 0) & (targets["box"][covered] <= 1))


def config(run: Path, steps: int) -> TrainConfig:
    return TrainConfig(run=run, steps=steps, warmup_vision=1, batch_size=1, lr=1e-3, vision_lr=1e-3,
                       dense_weight=0.5, readout_weight=0.5, seed=0, eval_every=10_000, save_every=1, threads=1,
                       init_from=None)


def test_a_run_saves_resumes_and_continues_the_scene_stream(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(config(run, steps=2))
    first = torch.load(run / "state.pt", weights_only=False)
    assert first["step"] == 2 and first["seen"] == 2
    assert (run / "checkpoint" / "model.safetensors").is_file()
    train(config(run, steps=3))
    second = torch.load(run / "state.pt", weights_only=False)
    assert second["step"] == 3 and second["seen"] == 3
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log == [] or all("step" in record for record in log)
    # --init-from: a new run starts from those weights with a fresh optimiser, at the next scene.
    fresh = tmp_path / "fresh"
    train(replace(config(fresh, steps=1), init_from=run / "state.pt"))
    third = torch.load(fresh / "state.pt", weights_only=False)
    assert third["step"] == 1 and third["seen"] == 4

