"""The demo trainer: packed conversations put the loss on exactly the answers, dense targets match
what is drawn, and a run saves, resumes and continues the scene stream."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevlm.demo.questions import parse_box
from edgevlm.demo.shapes import iou
from edgevlm.demo.train import (
    ASK_HEADS,
    Batcher,
    TrainConfig,
    asked_words,
    dense_targets,
    grounded_shapes,
    grounding_loss,
    question_weights,
    scene_batches,
    scene_questions,
    train,
)


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


def test_layout_targets_rank_and_count_the_drawn_shapes() -> None:
    for index in range(30):
        sample = scene_questions(index)[0]
        targets = dense_targets(sample)
        shapes = sample.scene.shapes
        for number, shape in enumerate(shapes, start=1):
            mine = targets["instance"] == number
            if not mine.any():  # a shape too small to own a cell
                continue
            rank = sum((s.cx, s.y1) < (shape.cx, shape.y1) for s in shapes)
            assert set(targets["rank"][mine]) == {rank}
            assert set(targets["same_colour"][mine]) == {sum(s.colour == shape.colour for s in shapes)}
            assert set(targets["same_kind"][mine]) == {sum(s.kind == shape.kind for s in shapes)}
            assert set(targets["total"][mine]) == {len(shapes)}


def test_question_weights_parse_and_refuse_unknown_types() -> None:
    assert question_weights("box=2,count=1.5") == (("box", 2.0), ("count", 1.5))
    with pytest.raises(argparse.ArgumentTypeError, match="unknown question type 'boxes'"):
        question_weights("boxes=2")


def test_grounded_shapes_are_the_ones_asked_about() -> None:
    seen = set()
    for index in range(60):
        for sample in scene_questions(index):
            about = [sample.scene.shapes[i] for i in grounded_shapes(sample)]
            seen.add(sample.qtype)
            if sample.qtype == "count":
                assert len(about) == int(sample.answer), sample.question
            elif sample.qtype == "describe":
                assert about == []
            else:
                assert about == [sample.target]
    assert seen == {"colour", "shape", "count", "box", "describe"}


def test_ground_mask_links_answer_positions_to_the_target_image_tokens() -> None:
    batcher = Batcher()
    groups = [scene_questions(i) for i in (21, 22)]
    batch = batcher(groups)
    ids, owner, ground = batch["input_ids"].numpy(), batch["owner"].numpy(), batch["ground"].numpy()
    image = ids == batcher.processor.image_token_id
    instance = batch["instance"].numpy()
    start = 0
    for row, group in enumerate(groups):
        tokens = int(image[row].sum())
        row_instance = instance[start : start + tokens]
        start += tokens
        for turn, sample in enumerate(group):
            q = turn + sum(len(g) for g in groups[:row])
            predicting = np.flatnonzero(owner[row, 1:] == q)
            per_token = batcher.answer_grounding(sample)
            assert len(per_token) == len(predicting)
            for p, shapes in zip(predicting, per_token, strict=True):
                wanted = np.isin(row_instance, [i + 1 for i in shapes])
                assert np.array_equal(ground[row, p][image[row]], wanted)
                assert not ground[row, p][~image[row]].any()
        # Positions that predict no answer token are never supervised.
        assert not ground[row, :-1][owner[row, 1:] < 0].any()


def test_a_description_looks_at_its_shapes_left_to_right() -> None:
    batcher = Batcher()
    sample = next(s for i in range(50) for s in scene_questions(i)
                  if s.qtype == "describe" and s.lang == "en" and len(s.scene.shapes) == 3)
    tokens = [batcher.tokenizer.decode([t]) for t in batcher._ids(sample.answer)] + ["<end>"]
    per_token = batcher.answer_grounding(sample)
    left_to_right = sorted(range(3), key=lambda i: sample.scene.shapes[i].cx)
    assert per_token[tokens.index(" 3")] == [0, 1, 2]  # the count looks at every shape
    shapes = sample.scene.shapes
    kinds = {s.kind for s in shapes}
    named = [(per_token[i], word.strip()) for i, word in enumerate(tokens) if word.strip() in kinds]
    assert [grounded for grounded, _ in named] == [[i] for i in left_to_right]
    assert [kind for _, kind in named] == [shapes[i].kind for i in left_to_right]


def test_answer_positions_look_back_at_the_question_s_key_words() -> None:
    batcher = Batcher()
    groups = [scene_questions(i) for i in (31, 32)]
    batch = batcher(groups)
    ids, owner, asked = batch["input_ids"].numpy(), batch["owner"].numpy(), batch["asked"].numpy()
    decode = batcher.tokenizer.decode
    for row, group in enumerate(groups):
        for turn, sample in enumerate(group):
            q = turn + sum(len(g) for g in groups[:row])
            predicting = np.flatnonzero(owner[row, 1:] == q)
            words = asked_words(sample)
            for p in predicting:
                looked = [decode([int(ids[row, j])]).strip().lower() for j in np.flatnonzero(asked[row, p])]
                assert set(looked) <= words and bool(looked) == bool(words), (sample.question, looked)
                # Only words before the answer, in this turn's question.
                assert all(j < predicting[0] for j in np.flatnonzero(asked[row, p]))
    assert {layer for layer, _ in ASK_HEADS} == {0}


def test_asked_words_name_what_to_look_for() -> None:
    samples = [s for i in range(80) for s in scene_questions(i)]
    colour_en = next(s for s in samples if s.qtype == "colour" and s.lang == "en")
    assert asked_words(colour_en) == {colour_en.target.kind, colour_en.target.kind + "s"}
    box_zh = next(s for s in samples if s.qtype == "box" and s.lang == "zh")
    assert set(asked_words(box_zh)) <= set(box_zh.question) and len(asked_words(box_zh)) >= 3
    assert all(asked_words(s) == set() for s in samples if s.qtype == "describe")


def test_grounding_loss_is_low_only_when_the_head_looks_at_the_target() -> None:
    ground = torch.zeros(1, 3, 3, dtype=torch.bool)
    ground[0, 2, 0] = True
    looking = torch.zeros(1, 4, 3, 3)
    looking[:, :, 2, 0] = 1.0
    away = torch.zeros(1, 4, 3, 3)
    away[:, :, 2, 1] = 1.0
    attentions = (looking, looking, looking, looking)
    heads = ((1, 0), (2, 3))
    assert grounding_loss(attentions, ground, heads).item() < 1e-3
    assert grounding_loss((away,) * 4, ground, heads).item() > 10


def config(run: Path, steps: int) -> TrainConfig:
    return TrainConfig(run=run, steps=steps, warmup_vision=1, batch_size=1, lr=1e-3, vision_lr=1e-3,
                       dense_weight=0.5, readout_weight=0.5, ground_weight=0.5, layout_weight=1.0,
                       question_weight=(("count", 2.0),), seed=0, eval_every=10_000,
                       save_every=1, threads=1, init_from=None)


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


def test_worker_processes_build_the_batches_the_loop_would_build(tmp_path: Path) -> None:
    cfg = replace(config(tmp_path, steps=2), batch_size=2)
    in_loop = list(scene_batches(cfg, seen=5, steps=2))
    ahead = list(scene_batches(replace(cfg, workers=2), seen=5, steps=2))
    assert len(in_loop) == len(ahead) == 2
    for mine, theirs in zip(in_loop, ahead, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.equal(mine[key], theirs[key]), key
    # batch k holds scenes 5 + 2k and 6 + 2k: the stream continues where `seen` says
    assert not torch.equal(in_loop[0]["input_ids"][:1], in_loop[1]["input_ids"][:1])
