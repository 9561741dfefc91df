"""The engine on a real exported demo bundle with real ONNX Runtime sessions, against HF transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgevlm.demo.questions import heldout_set
from edgevlm.demo.reference import chat_messages
from edgevlm.demo.shapes import render
from edgevlm.runtime.demo_answers import answer, answer_results, sample_request
from edgevlm.runtime.detokenizer import REPLACEMENT
from edgevlm.runtime.engine import Engine
from edgevlm.runtime.types import (
    GenerationRequest,
    ImagePart,
    Message,
    RequestRejected,
    SamplingParams,
    TextPart,
)

MAX_NEW = 48
PARITY_SAMPLES = 40  # heldout_set cycles question types and languages: a balanced slice


@pytest.fixture(scope="module")
def engine(bundle_dir: Path) -> Engine:
    return Engine.from_bundle(bundle_dir, max_batch=16, max_queue=256)


@pytest.fixture(scope="module")
def samples():
    return heldout_set(PARITY_SAMPLES)


@pytest.fixture(scope="module")
def hf_tokens(hf_model, hf_processor, samples) -> list[list[int]]:
    """HF `generate`, greedy, one sample at a time: answer tokens up to and including the first EOS."""
    eos = set(hf_model.generation_config.eos_token_id)
    out = []
    for sample in samples:
        text = hf_processor.apply_chat_template(chat_messages(sample), add_generation_prompt=True, tokenize=False)
        enc = hf_processor(text=[text], images=[render(sample.scene)], return_tensors="pt")
        with torch.inference_mode():
            generated = hf_model.generate(**enc, max_new_tokens=MAX_NEW, do_sample=False)
        tokens = generated[0, enc["input_ids"].shape[1] :].tolist()
        end = next((i for i, t in enumerate(tokens) if t in eos), None)
        out.append(tokens if end is None else tokens[: end + 1])
    return out


def assert_kv_free(engine: Engine) -> None:
    stats = engine.stats()
    assert (stats.num_running, stats.num_waiting, stats.kv_tokens_used) == (0, 0, 0)
    assert engine.cache.table.num_free == engine.cache.layout.rows


def text_request(request_id: str, text: str, **sampling) -> GenerationRequest:
    return GenerationRequest(request_id, (Message("user", (TextPart(text),)),), SamplingParams(**sampling))


def test_greedy_answers_equal_hf_generate(engine: Engine, samples, hf_tokens, hf_processor) -> None:
    results = answer_results(engine, samples, MAX_NEW)
    mismatched = [
        (s.question, list(r.token_ids), ref)
        for s, r, ref in zip(samples, results, hf_tokens, strict=True)
        if list(r.token_ids) != ref
    ]
    assert not mismatched, f"{len(mismatched)}/{len(samples)} differ from HF, first: {mismatched[0]}"
    for result, ref in zip(results, hf_tokens, strict=True):
        eos_cut = ref[:-1] if ref and ref[-1] in engine.eos_token_ids else ref
        assert result.text == hf_processor.tokenizer.decode(eos_cut, skip_special_tokens=False)
        assert result.finish_reason == ("stop" if len(eos_cut) < len(ref) else "length")
    assert_kv_free(engine)


def test_batch_invariance_alone_and_among_16(engine: Engine, samples) -> None:
    target = samples[3]
    alone = answer_results(engine, [target], MAX_NEW)[0]
    crowd = answer_results(engine, samples[10:17] + [target] + samples[17:25], MAX_NEW)
    assert len(crowd) == 16
    assert crowd[7].token_ids == alone.token_ids
    assert_kv_free(engine)


def test_answer_helper_matches_reference_text_format(engine: Engine, samples, hf_tokens, hf_processor) -> None:
    box = next(i for i, s in enumerate(samples) if s.qtype == "box")
    text = answer(engine, samples[box], MAX_NEW)
    assert text == answer_results(engine, [samples[box]], MAX_NEW)[0].text


def test_cancel_mid_stream_frees_kv(engine: Engine) -> None:
    seq = engine.add_request(text_request("long", "describe the image.", max_tokens=40, min_tokens=40))
    events = []
    while len(seq.output_ids) < 5:
        events += engine.step()
    assert engine.stats().kv_tokens_used >= seq.num_prompt
    cancelled_before = engine.stats().num_cancelled
    _, final = engine.abort("long")
    assert final.finish_reason == "cancelled" and final.usage.completion_tokens == 5
    assert engine.stats().num_cancelled == cancelled_before + 1
    assert_kv_free(engine)
    assert engine.abort("long") is None


def test_burst_of_50_mixed_requests_leaves_all_kv_free(engine: Engine, samples) -> None:
    requests: list[GenerationRequest] = []
    for i in range(50):
        kind = i % 5
        if kind == 0:
            requests.append(sample_request(samples[i % len(samples)], f"b{i}", 8 + i % 20))
        elif kind == 1:
            requests.append(text_request(f"b{i}", "how many shapes are there?", max_tokens=30, temperature=0.9,
                                         top_p=0.9, seed=i))
        elif kind == 2:
            req = sample_request(samples[(3 * i) % len(samples)], f"b{i}", 30)
            requests.append(GenerationRequest(req.request_id, req.messages, SamplingParams(max_tokens=30, stop=(" ",))))
        elif kind == 3:
            requests.append(text_request(f"b{i}", "这张图片里有什么?", max_tokens=25, min_tokens=25, top_k=5,
                                         temperature=1.0, repetition_penalty=1.3, logprobs=True, top_logprobs=3))
        else:
            requests.append(text_request(f"b{i}", "sneaky <|image|>"))  # rejected: errors alone
    cancelled = {"b13", "b23", "b33"}  # min_tokens=25 requests: still live at step 6
    results = {}
    texts: dict[str, str] = {}
    for request in requests:
        try:
            engine.add_request(request)
        except RequestRejected:
            results[request.request_id] = "rejected"
    steps = 0
    while engine.has_work:
        for seq, event in engine.step():
            texts[seq.request_id] = texts.get(seq.request_id, "") + event.text
            if event.finish_reason:
                results[seq.request_id] = event.finish_reason
        steps += 1
        if steps == 6:
            for request_id in cancelled:
                if request_id in engine.live_request_ids():
                    _, event = engine.abort(request_id)
                    results[request_id] = event.finish_reason
    assert len(results) == 50
    assert sum(r == "rejected" for r in results.values()) == 10
    assert all(results[r] == "cancelled" for r in cancelled)
    assert "error" not in results.values()
    assert_kv_free(engine)


def test_seeded_sampling_reproduces(engine: Engine, samples) -> None:
    request = sample_request(samples[0], "seeded", 24)
    params = SamplingParams(max_tokens=24, min_tokens=24, temperature=1.2, top_p=0.95, top_k=50, seed=1234)
    seeded = GenerationRequest("seeded", request.messages, params)
    first = engine.generate(seeded)[0]
    second = engine.generate(seeded)[0]
    others = [sample_request(s, f"o{i}", 24) for i, s in enumerate(samples[5:10])]
    third = engine.generate([*others, seeded])[-1]
    assert first.token_ids == second.token_ids == third.token_ids
    other_seed = engine.generate(GenerationRequest("s2", request.messages, SamplingParams(
        max_tokens=24, min_tokens=24, temperature=1.2, top_p=0.95, top_k=50, seed=99)))[0]
    assert other_seed.token_ids != first.token_ids


def test_stop_strings_cut_correctly(engine: Engine) -> None:
    full = engine.generate(text_request("full", "describe the image.", max_tokens=30, min_tokens=30))[0].text
    assert len(full) > 6
    stop = full[3:6]  # a stop string inside the answer, most likely spanning a token boundary
    cut = engine.generate(text_request("cut", "describe the image.", max_tokens=30, min_tokens=30,
                                       stop=(stop, "never-there")))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    assert stop not in cut.text


def test_chinese_streams_whole_characters(engine: Engine, samples) -> None:
    zh = [s for s in samples if s.lang == "zh" and s.qtype == "describe"][:2]
    requests = [sample_request(s, f"zh{i}", MAX_NEW) for i, s in enumerate(zh)]
    for request in requests:
        engine.add_request(request)
    pieces: dict[str, list[str]] = {r.request_id: [] for r in requests}
    ids: dict[str, tuple[int, ...]] = {}
    while engine.has_work:
        for seq, event in engine.step():
            pieces[seq.request_id].append(event.text)
            ids[seq.request_id] = tuple(seq.output_ids)
    for request_id, parts in pieces.items():
        assert all(REPLACEMENT not in p for p in parts)
        tokens = [t for t in ids[request_id] if t not in engine.eos_token_ids]
        assert "".join(parts) == engine.preprocessor.decode(tokens)


def test_follow_up_about_the_same_image_skips_the_vision_encoder(bundle_dir: Path, samples) -> None:
    # The image-embedding cache alone (prefix reuse off: it would skip the encoder by itself).
    engine = Engine.from_bundle(bundle_dir, max_batch=4, prefix_cache_mb=0)
    image = render(samples[7].scene)
    first_q = Message("user", (ImagePart(image), TextPart(samples[7].question)))
    calls, hits = engine.images.num_vision_calls, engine.stats().image_cache_hits
    first = engine.generate(GenerationRequest("turn1", (first_q,)))[0]
    assert engine.images.num_vision_calls == calls + 1
    follow_up = (first_q, Message("assistant", (TextPart(first.text),)), Message("user", (TextPart("and?"),)))
    engine.generate(GenerationRequest("turn2", follow_up))
    again = engine.generate(GenerationRequest("again", (Message("user", (ImagePart(image.copy()),
                                                                          TextPart(samples[7].question))),)))[0]
    assert engine.images.num_vision_calls == calls + 1
    assert engine.stats().image_cache_hits == hits + 2
    assert again.token_ids == first.token_ids


def test_bad_image_errors_only_its_own_request(engine: Engine, samples, monkeypatch: pytest.MonkeyPatch) -> None:
    poison = render(samples[11].scene)
    poison_key = engine.preprocessor.image_spec(poison).key
    real_pixels = engine.preprocessor.pixels

    def pixels(specs):
        if any(s.key == poison_key for s in specs):
            raise ValueError("corrupt image")
        return real_pixels(specs)

    monkeypatch.setattr(engine.preprocessor, "pixels", pixels)
    good = [sample_request(s, f"g{i}", MAX_NEW) for i, s in enumerate(samples[12:15])]
    expected = [r.token_ids for r in engine.generate(good)]
    engine.clear_caches()  # the good images must go through the vision encoder with the bad one
    bad = GenerationRequest("bad", (Message("user", (ImagePart(poison), TextPart("?"))),))
    results = engine.generate([good[0], bad, good[1], good[2]])
    assert results[1].finish_reason == "error" and "corrupt image" in results[1].error
    assert [r.token_ids for r in (results[0], results[2], results[3])] == expected
    assert_kv_free(engine)


def test_decoder_failure_errors_only_the_culprit(engine: Engine, samples, monkeypatch: pytest.MonkeyPatch) -> None:
    good = [sample_request(s, f"d{i}", MAX_NEW) for i, s in enumerate(samples[20:23])]
    expected = [r.token_ids for r in engine.generate(good)]
    culprit = text_request("culprit", "how many shapes are there?", max_tokens=20, min_tokens=20)
    real_decode = engine.backend.decode

    def decode(step, cache):
        rows = range(step.first_row, step.first_row + step.batch)
        if any(engine.cache.table.owner(r).request_id == "culprit" for r in rows) and step.past > 3:
            raise RuntimeError("kernel failure")
        return real_decode(step, cache)

    monkeypatch.setattr(engine.backend, "decode", decode)
    results = engine.generate([good[0], culprit, good[1], good[2]])
    assert results[1].finish_reason == "error" and "kernel failure" in results[1].error
    assert [r.token_ids for r in (results[0], results[2], results[3])] == expected
    assert_kv_free(engine)


def test_system_prompt_multi_turn_and_logprobs(engine: Engine, samples) -> None:
    image = render(samples[0].scene)
    messages = (
        Message("system", (TextPart("Answer briefly."),)),
        Message("user", (ImagePart(image), TextPart(samples[0].question))),
        Message("assistant", (TextPart(samples[0].answer),)),
        Message("user", (TextPart(samples[1].question),)),
    )
    params = SamplingParams(max_tokens=8, logprobs=True, top_logprobs=2)
    result = engine.generate(GenerationRequest("chat", messages, params))[0]
    assert result.finish_reason in ("stop", "length")
    emitted = [t for t in result.token_ids if t not in engine.eos_token_ids]
    assert len(result.logprobs) == len(emitted)
    for lp in result.logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 2 and lp.top[0][1] >= lp.logprob - 1e-6


def test_context_limits(bundle_dir: Path, samples) -> None:
    small = Engine.from_bundle(bundle_dir, max_seq_len=64, max_batch=2)
    with pytest.raises(RequestRejected, match="context"):
        small.add_request(sample_request(samples[0], "too-long"))
    result = small.generate(text_request("capped", "describe the image.", max_tokens=500, min_tokens=500))[0]
    assert result.finish_reason == "length"
    assert result.usage.prompt_tokens + result.usage.completion_tokens == 64


def test_vision_encoder_batches_images_across_requests(engine: Engine) -> None:
    from edgevlm.bench.workload import bench_image

    images = [bench_image(500 + i).resize((112, 112)) for i in range(4)]  # 4 x 64 patches: one call
    requests = [GenerationRequest(f"v{i}", (Message("user", (ImagePart(im), TextPart("describe the image."))),),
                                  SamplingParams(max_tokens=4)) for i, im in enumerate(images)]
    alone = [engine.generate(r)[0].token_ids for r in requests]
    engine.clear_caches()
    calls = engine.images.num_vision_calls
    together = [r.token_ids for r in engine.generate(requests)]
    assert engine.images.num_vision_calls == calls + 1
    assert together == alone
