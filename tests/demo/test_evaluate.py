"""Evaluation plumbing with scripted backends: order, scoring, agreement, report and summary."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from edgevlm.demo.evaluate import (
    HELDOUT_SIZE,
    BackendRun,
    EvalConfig,
    agreement,
    answer_all,
    build_report,
    format_summary,
    run_backend,
    score,
)
from edgevlm.demo.questions import LANGUAGES, QUESTION_TYPES, Sample, is_correct


def oracle(samples: Sequence[Sample]) -> list[str]:
    return [s.answer for s in samples]


def silent(samples: Sequence[Sample]) -> list[str]:
    return ["" for _ in samples]


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return EvalConfig(limit=40).samples()


@pytest.mark.parametrize(
    ("field", "value"), [("limit", 0), ("limit", HELDOUT_SIZE + 1), ("batch_size", 0), ("max_new_tokens", 0)]
)
def test_config_rejects_out_of_range_values_naming_the_field(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        EvalConfig(**{field: value})


def test_config_samples_are_a_prefix_of_the_heldout_set() -> None:
    assert EvalConfig(limit=7).samples() == EvalConfig().samples()[:7]
    assert len(EvalConfig().samples()) == HELDOUT_SIZE


def test_answers_come_back_in_sample_order_whatever_the_batching(samples: list[Sample]) -> None:
    seen_batches: list[int] = []

    def tagged(batch: Sequence[Sample]) -> list[str]:
        seen_batches.append(len(batch))
        return [f"{s.seed}" for s in batch]

    answers = answer_all(samples, tagged, batch_size=16)
    assert answers == [f"{s.seed}" for s in samples]
    assert seen_batches == [16, 16, 8]


def test_batches_group_similar_image_sizes(samples: list[Sample]) -> None:
    areas: list[list[int]] = []

    def record(batch: Sequence[Sample]) -> list[str]:
        areas.append([s.scene.width * s.scene.height for s in batch])
        return silent(batch)

    answer_all(samples, record, batch_size=8)
    flat = [a for batch in areas for a in batch]
    assert flat == sorted(flat)


def test_a_backend_that_drops_answers_is_an_error(samples: list[Sample]) -> None:
    with pytest.raises(RuntimeError, match="answers for"):
        answer_all(samples, lambda batch: silent(batch)[1:], batch_size=8)


def test_progress_reports_every_batch(samples: list[Sample]) -> None:
    calls: list[tuple[int, int]] = []
    answer_all(samples, silent, batch_size=16, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(16, 40), (32, 40), (40, 40)]


def test_scores_per_type_language_and_overall(samples: list[Sample]) -> None:
    perfect = score(samples, oracle(samples))
    assert perfect.overall.correct == perfect.overall.total == 40 and perfect.overall.accuracy == 1.0
    assert set(perfect.by_type) == set(QUESTION_TYPES) and set(perfect.by_lang) == set(LANGUAGES)
    assert sum(t.total for t in perfect.by_type.values()) == sum(t.total for t in perfect.by_lang.values()) == 40
    # Right only on English colour questions.
    answers = [s.answer if (s.qtype, s.lang) == ("colour", "en") else "" for s in samples]
    partial = score(samples, answers)
    expected = sum(s.qtype == "colour" and s.lang == "en" for s in samples)
    assert partial.overall.correct == expected
    assert partial.by_type["colour"].correct == partial.by_lang["en"].correct == expected
    assert partial.by_type["box"].accuracy == 0.0 and partial.by_lang["zh"].accuracy == 0.0


def test_agreement_is_the_share_of_identical_answers() -> None:
    assert agreement(["a", "b", "c", "d"], ["a", "b", "x", "d"]) == 0.75
    assert agreement([], []) == 1.0
    with pytest.raises(ValueError, match="length"):
        agreement(["a"], [])


def test_report_states_scores_agreement_and_every_answer(samples: list[Sample]) -> None:
    half = [s.answer if i % 2 else "" for i, s in enumerate(samples)]
    runs = [
        run_backend("model", "demo/model", samples, oracle, batch_size=8),
        BackendRun("bundle", "bundle-dir", tuple(half), 1.0),
    ]
    report = json.loads(json.dumps(build_report(samples, runs)))
    assert report["num_questions"] == 40
    assert report["backends"]["model"]["scores"]["overall"]["accuracy"] == 1.0
    assert report["backends"]["bundle"]["scores"]["overall"]["correct"] == 20
    assert report["agreement"] == {"model_vs_bundle": 0.5}
    for entry, sample in zip(report["questions"], samples, strict=True):
        assert entry["answers"]["bundle"] == half[entry["index"]]
        assert entry["correct"]["bundle"] == is_correct(sample, half[entry["index"]])
        assert (entry["seed"], entry["question"], entry["reference"]) == (sample.seed, sample.question, sample.answer)


def test_summary_has_a_row_per_type_language_and_overall(samples: list[Sample]) -> None:
    runs = [run_backend("model", "m", samples, oracle, 16), run_backend("bundle", "b", samples, silent, 16)]
    text = format_summary(build_report(samples, runs))
    lines = text.splitlines()
    assert lines[0].split() == ["model", "bundle"]
    for label in (*QUESTION_TYPES, *LANGUAGES):
        assert any(line.split()[0] == label for line in lines[1:])
    overall = next(line for line in lines if line.startswith("overall"))
    assert "40/40" in overall and "0/40" in overall
    assert "agreement model vs bundle: 0.0%" in text
