"""Prefix reuse on a real bundle: a follow-up about the same image skips its prefill and the
encoder; questions arriving together share one prefill; a newcomer copies from a running row; the
answers are those of an engine without a prefix cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevlm.demo.questions import heldout_set
from edgevlm.demo.shapes import render
from edgevlm.runtime.engine import Engine
from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart


@pytest.fixture(scope="module")
def engine(bundle_dir: Path) -> Engine:
    return Engine.from_bundle(bundle_dir, max_batch=4)


def ask(engine: Engine, request_id: str, messages: tuple[Message, ...]):
    request = GenerationRequest(request_id, messages, SamplingParams(max_tokens=48))
    seq = engine.add_request(request)
    while engine.has_work:
        engine.step()
    return seq


def test_follow_up_reuses_the_first_turn_and_answers_the_same(engine: Engine, bundle_dir: Path) -> None:
    sample = heldout_set(12)[11]
    first_q = Message("user", (ImagePart(render(sample.scene)), TextPart(sample.question)))
    first = ask(engine, "p1", (first_q,))
    follow_up = (first_q, Message("assistant", (TextPart(first.detokenizer.text),)),
                 Message("user", (TextPart("How many shapes are there?"),)))
    calls, hits = engine.images.num_vision_calls, engine.stats().prefix_cache_hits
    second = ask(engine, "p2", follow_up)
    assert engine.stats().prefix_cache_hits == hits + 1
    # The whole first turn (template, image, question) was cached: no prefill of it, no encoder.
    assert second.prefix_reused > len(first.prompt) - 2
    assert engine.images.num_vision_calls == calls
    plain = Engine.from_bundle(bundle_dir, max_batch=4, prefix_cache_mb=0)
    reference = ask(plain, "p3", follow_up)
    assert reference.prefix_reused == 0
    assert second.output_ids == reference.output_ids
    assert engine.cache.table.num_used == 0  # every row free again


def test_another_image_reuses_nothing_past_the_template(engine: Engine) -> None:
    a, b = heldout_set(20)[13], heldout_set(20)[18]
    ask(engine, "q1", (Message("user", (ImagePart(render(a.scene)), TextPart(a.question))),))
    seq = ask(engine, "q2", (Message("user", (ImagePart(render(b.scene)), TextPart(a.question))),))
    assert seq.prefix_reused == 0


def _about(sample, question: str) -> tuple[Message, ...]:
    return (Message("user", (ImagePart(render(sample.scene)), TextPart(question))),)


def _image_end(seq) -> int:
    return int(seq.prompt.image_token_index[-1]) + 1


def _plain_answers(bundle_dir: Path, conversations: list[tuple[Message, ...]]) -> list[list[int]]:
    plain = Engine.from_bundle(bundle_dir, max_batch=4, prefix_cache_mb=0)
    return [ask(plain, f"plain{i}", c).output_ids for i, c in enumerate(conversations)]


def test_questions_about_one_image_arriving_together_prefill_it_once(engine: Engine, bundle_dir: Path) -> None:
    sample = heldout_set(40)[31]
    conversations = [_about(sample, q) for q in
                     ("What colour is the circle?", "How many shapes are there?", "Describe the picture.")]
    calls, hits = engine.images.num_vision_calls, engine.stats().prefix_cache_hits
    seqs = [engine.add_request(GenerationRequest(f"t{i}", c, SamplingParams(max_tokens=48)))
            for i, c in enumerate(conversations)]
    engine.step()  # the first prefills; the others wait for its prompt instead of computing it again
    assert seqs[0].num_cached == len(seqs[0].prompt) and [s.num_cached for s in seqs[1:]] == [0, 0]
    while engine.has_work:
        engine.step()
    assert seqs[0].prefix_reused == 0
    assert all(s.prefix_reused >= _image_end(s) for s in seqs[1:])  # template + image copied from its row
    assert engine.images.num_vision_calls == calls + 1
    assert engine.stats().prefix_cache_hits == hits + 2
    assert [s.output_ids for s in seqs] == _plain_answers(bundle_dir, conversations)
    assert engine.cache.table.num_used == 0


def test_a_newcomer_copies_the_prefix_of_a_row_still_decoding(engine: Engine, bundle_dir: Path) -> None:
    sample = heldout_set(40)[33]
    first_c, second_c = _about(sample, "Describe the picture."), _about(sample, "What shape is red?")
    first = engine.add_request(GenerationRequest("d1", first_c, SamplingParams(max_tokens=40, min_tokens=40)))
    while len(first.output_ids) < 5:
        engine.step()
    calls = engine.images.num_vision_calls
    second = engine.add_request(GenerationRequest("d2", second_c, SamplingParams(max_tokens=48)))
    while engine.has_work:
        engine.step()
    assert second.prefix_reused >= _image_end(second) and engine.images.num_vision_calls == calls
    reference_first = ask(Engine.from_bundle(bundle_dir, max_batch=4, prefix_cache_mb=0), "r1", first_c)
    assert len(first.output_ids) == 40 and first.output_ids[:8] == reference_first.output_ids[:8]
    assert second.output_ids == _plain_answers(bundle_dir, [second_c])[0]
