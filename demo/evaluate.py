"""Run the fixed held-out set through one or more backends, score the answers, build the report.

A backend is any callable `answer_batch(samples) -> answers` (one string per sample, same order):
the PyTorch reference (`edgevlm.demo.reference`) or an exported bundle through the runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgevlm.demo.questions import LANGUAGES, QUESTION_TYPES, Sample, heldout_set, is_correct

AnswerBatch = Callable[[Sequence[Sample]], list[str]]
Progress = Callable[[int, int], None]

HELDOUT_SIZE = 600


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """Which slice of the held-out set to run and how."""

    limit: int = HELDOUT_SIZE
    batch_size: int = 16
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= HELDOUT_SIZE:
            raise ValueError(f"limit must be in [1, {HELDOUT_SIZE}], got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def samples(self) -> list[Sample]:
        return heldout_set(HELDOUT_SIZE)[: self.limit]


@dataclass(frozen=True, slots=True)
class Tally:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "total": self.total, "accuracy": self.accuracy}


@dataclass(frozen=True, slots=True)
class Scores:
    """Accuracy over the whole run, per question type and per language."""

    overall: Tally
    by_type: dict[str, Tally]
    by_lang: dict[str, Tally]

    def as_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.as_dict(),
            "by_type": {k: v.as_dict() for k, v in self.by_type.items()},
            "by_lang": {k: v.as_dict() for k, v in self.by_lang.items()},
        }


@dataclass(frozen=True, slots=True)
class BackendRun:
    """One backend's answers to the samples, in the samples' order."""

    name: str
    source: str
    answers: tuple[str, ...]
    seconds: float


def answer_all(
    samples: Sequence[Sample], answer_batch: AnswerBatch, batch_size: int, progress: Progress | None = None
) -> list[str]:
    """Answers for every sample, in the samples' order."""
    # Batches follow image area (the bulk of each prompt) so left padding stays short.
    order = sorted(range(len(samples)), key=lambda i: samples[i].scene.width * samples[i].scene.height)
    answers: list[str] = [""] * len(samples)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch_answers = answer_batch([samples[i] for i in chunk])
        if len(batch_answers) != len(chunk):
            raise RuntimeError(f"backend returned {len(batch_answers)} answers for {len(chunk)} samples")
        for i, answer in zip(chunk, batch_answers, strict=True):
            answers[i] = answer
        if progress is not None:
            progress(start + len(chunk), len(samples))
    return answers


def run_backend(
    name: str,
    source: str,
    samples: Sequence[Sample],
    answer_batch: AnswerBatch,
    batch_size: int,
    progress: Progress | None = None,
) -> BackendRun:
    started = time.perf_counter()
    answers = answer_all(samples, answer_batch, batch_size, progress)
    return BackendRun(name, source, tuple(answers), time.perf_counter() - started)


def score(samples: Sequence[Sample], answers: Sequence[str]) -> Scores:
    """Tally `is_correct` over all samples, per question type and per language."""
    right = [is_correct(s, a) for s, a in zip(samples, answers, strict=True)]
    return Scores(
        overall=Tally(sum(right), len(right)),
        by_type=_tally_by(samples, right, "qtype", QUESTION_TYPES),
        by_lang=_tally_by(samples, right, "lang", LANGUAGES),
    )


def _tally_by(samples: Sequence[Sample], right: list[bool], field: str, values: Sequence[str]) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for value in values:
        picked = [r for s, r in zip(samples, right, strict=True) if getattr(s, field) == value]
        tallies[value] = Tally(sum(picked), len(picked))
    return tallies


def agreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of identical answers."""
    if len(a) != len(b):
        raise ValueError(f"answer lists differ in length: {len(a)} vs {len(b)}")
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else 1.0


def build_report(samples: Sequence[Sample], runs: Sequence[BackendRun]) -> dict[str, Any]:
    """The JSON report: per-backend scores, their agreement, and every question with its answers."""
    report: dict[str, Any] = {
        "heldout_size": HELDOUT_SIZE,
        "num_questions": len(samples),
        "backends": {
            r.name: {"source": r.source, "seconds": round(r.seconds, 3), "scores": score(samples, r.answers).as_dict()}
            for r in runs
        },
        "agreement": {
            f"{a.name}_vs_{b.name}": agreement(a.answers, b.answers) for i, a in enumerate(runs) for b in runs[i + 1 :]
        },
        "questions": [_question_entry(index, sample, runs) for index, sample in enumerate(samples)],
    }
    return report


def _question_entry(index: int, sample: Sample, runs: Sequence[BackendRun]) -> dict[str, Any]:
    return {
        "index": index,
        "seed": sample.seed,
        "qtype": sample.qtype,
        "lang": sample.lang,
        "question": sample.question,
        "reference": sample.answer,
        "answers": {r.name: r.answers[index] for r in runs},
        "correct": {r.name: is_correct(sample, r.answers[index]) for r in runs},
    }


def format_summary(report: dict[str, Any]) -> str:
    """A plain-text table: one accuracy column per backend, rows per type, language and overall."""
    names = list(report["backends"])
    rows = [("", names)]
    for group in ("by_type", "by_lang"):
        for key in report["backends"][names[0]]["scores"][group]:
            rows.append((key, [_cell(report["backends"][n]["scores"][group][key]) for n in names]))
    rows.append(("overall", [_cell(report["backends"][n]["scores"]["overall"]) for n in names]))
    lines = [f"{label:<10}" + "".join(f"{cell:>20}" for cell in cells) for label, cells in rows]
    for pair, rate in report["agreement"].items():
        lines.append(f"agreement {pair.replace('_vs_', ' vs ')}: {rate:.1%} identical answers")
    return "\n".join(lines)


def _cell(tally: dict[str, Any]) -> str:
    return f"{tally['correct']}/{tally['total']} {tally['accuracy']:6.1%}"
