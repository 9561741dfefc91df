"""`edgevlm bench engine` pieces that need no model: workload, bandwidth floor, report, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgevlm.bench.bandwidth import (
    copy_bandwidth,
    decoder_weight_bytes,
    floor_ms_per_step,
    gemv_seconds,
    probe_matrix,
    read_bandwidth,
)
from edgevlm.bench.report import format_table, write_outputs
from edgevlm.bench.workload import IMAGE_SIDE, Workload, bench_image, question_text
from edgevlm.cli import build_parser


def test_workload_validation() -> None:
    with pytest.raises(ValueError, match="decode_tokens"):
        Workload(decode_tokens=1)
    with pytest.raises(ValueError, match="concurrency"):
        Workload(concurrency=(0,))


def test_images_are_448_and_differ_by_seed() -> None:
    a, b = bench_image(1), bench_image(2)
    assert a.size == (IMAGE_SIDE, IMAGE_SIDE)
    assert a.tobytes() != b.tobytes() and a.tobytes() == bench_image(1).tobytes()


def test_question_has_exactly_the_asked_tokens() -> None:
    from transformers import PreTrainedTokenizerFast

    from edgevlm.demo.tokenizer import build_tokenizer

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer())
    text = question_text(tokenizer, 20)
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 20


def test_bandwidth_floor(tmp_path: Path) -> None:
    (tmp_path / "decoder.onnx").write_bytes(b"x" * 1000)
    (tmp_path / "decoder.onnx.data").write_bytes(b"x" * 9000)
    assert decoder_weight_bytes(tmp_path) == 10_000
    assert floor_ms_per_step(10_000, 1e7) == pytest.approx(1.0)
    assert copy_bandwidth(size_mb=8, repeats=2) > 1e8  # any machine copies faster than 100 MB/s
    assert read_bandwidth(size_mb=8, repeats=2) > 1e8
    matrix = probe_matrix(8 << 20)
    assert matrix.nbytes == 8 << 20 and matrix.nbytes / min(gemv_seconds(matrix, 2)) > 1e8


def test_table_gives_the_paired_floor_ratio() -> None:
    pairs = [{"gb_per_s": 10.0, "floor_ms": 1.2, "decode_ms": 1.2 * r, "ratio": r} for r in (1.3, 1.1, 1.2)]
    data = report()
    data["sides"]["runtime"] |= {"decode_floor_pairs": pairs, "decode_floor_ratio": 1.2}
    data["bandwidth"]["floor_source"] = "beside each decode, median"
    table = format_table(data)
    assert "1.20 x the floor (median of 3 decodes" in table and "range 1.10-1.30" in table
    assert "4.17 x the floor" not in table  # the once-measured ratio gives way to the paired one
    assert "(beside each decode, median)" in table


def report() -> dict:
    side = {"ttft_ms": 100.0, "ttft_image_cache_hit_ms": 10.0, "decode_ms_per_token": 5.0,
            "tokens_per_s": {"1": 100.0, "4": 300.0}, "decode_tokens_per_s": {"1": 200.0, "4": 700.0},
            "peak_rss_mb": 500.0, "load_s": 2.0}
    hf = {k: v for k, v in side.items() if k != "decode_tokens_per_s"}
    hf = {**hf, "ttft_ms": 400.0, "ttft_image_cache_hit_ms": None, "tokens_per_s": {"1": 50.0, "4": 100.0}}
    return {
        "workload": Workload(concurrency=(1, 4)).as_dict(),
        "sides": {"hf": hf, "runtime": side},
        "bandwidth": {"copy_gb_per_s": 10.0, "decoder_weight_mb": 12.0, "floor_ms_per_decode_step": 1.2,
                      "floor_tokens_per_s": {"1": 833.0, "4": 3333.0}},
    }


def test_table_and_json(tmp_path: Path) -> None:
    table = format_table(report())
    assert "TTFT, 448x448 image + question" in table and "4.00x" in table  # 400 ms vs 100 ms
    assert "throughput, 4 concurrent" in table and "3.00x" in table
    assert "n/a" in table and "1.20 ms per decode step" in table
    assert "decode only (prefill excluded), 4 concurrent" in table and "700.0 tok/s" in table
    assert "4.17 x the floor" in table  # 5 ms per token over a 1.2 ms floor
    assert "4 concurrent = 3.50 x batch 1" in table
    written = write_outputs(report(), tmp_path)
    assert json.loads(written[0].read_text())["sides"]["runtime"]["ttft_ms"] == 100.0


def test_cli_registers_engine_and_make_model() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "engine", "--bundle", "b", "--model", "m", "--concurrency", "1,2"])
    assert args.bench_command == "engine" and args.concurrency == "1,2"
    args = parser.parse_args(["bench", "make-model", "small", "--out", "x"])
    assert args.size == "small" and args.out == Path("x")


def test_steady_decode_rate_on_the_demo_bundle(demo_bundle: Path) -> None:
    from edgevlm.bench.runtime_side import _decode_tokens_per_s
    from edgevlm.bench.workload import bench_image
    from edgevlm.runtime.engine import Engine
    from edgevlm.runtime.types import GenerationRequest, ImagePart, Message, SamplingParams, TextPart

    engine = Engine.from_bundle(demo_bundle, max_batch=4)
    messages = [(Message("user", (ImagePart(bench_image(i)), TextPart("Describe the image."))),) for i in range(3)]
    requests = [GenerationRequest(f"r{i}", m, SamplingParams(max_tokens=40, min_tokens=40))
                for i, m in enumerate(messages)]
    rate = _decode_tokens_per_s(engine, requests)
    assert rate > 0
    assert not engine.has_work and engine.stats().kv_tokens_used == 0  # measured sequences are aborted and freed


def test_decode_beside_floor_pairs_each_decode_with_its_own_probe(demo_bundle: Path) -> None:
    from edgevlm.bench.runtime_side import bench_request, decode_beside_floor
    from edgevlm.runtime.engine import Engine

    engine = Engine.from_bundle(demo_bundle, max_batch=2)
    pairs = decode_beside_floor(engine, lambda i: bench_request("Describe the image.", f"d{i}", i, 8),
                                weight_bytes=12 << 20, pairs=2)
    assert len(pairs) == 2
    for pair in pairs:
        assert pair["gb_per_s"] > 0.1 and pair["decode_ms"] > 0
        assert pair["floor_ms"] == pytest.approx(1000 * (12 << 20) / (pair["gb_per_s"] * 1e9))
        assert pair["ratio"] == pytest.approx(pair["decode_ms"] / pair["floor_ms"])
        assert pair["decode_mean_ms"] > 0
    assert engine.stats().kv_tokens_used == 0
