"""`edgevlm bench serve` (bench/serve.py) against the fake-engine server."""

import argparse
import json

import pytest

from edgevlm.bench.serve import (
    LevelResult,
    Target,
    bench,
    median_result,
    parse_levels,
    register_serve,
    scaling_lines,
    write_outputs,
)
from edgevlm.errors import UserError


def bench_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_serve(parser.add_subparsers())
    return parser.parse_args(["serve", "--requests", "6", "--max-tokens", "8", *extra])


def level(concurrency: int, tokens_per_s: float, latency: float = 1.0, errors: float = 0.0,
          rss: float | None = 100.0) -> LevelResult:
    return LevelResult(concurrency, 10, 2.0, latency, latency, latency, 0.1, 0.1, tokens_per_s, errors, 1, rss)


def test_levels():
    assert parse_levels("1,4, 8") == [1, 4, 8]
    for bad in ("", "0,1", "a"):
        with pytest.raises(UserError):
            parse_levels(bad)


def test_bench_reports_every_level_and_writes_json_and_png(fake_server, tmp_path, capsys):
    with fake_server(engine={"delay": 0.005, "capacity": 2}) as (url, _):
        results = bench(Target("edgevlm", url), [1, 4], bench_args())
    one, four = results
    assert (one.concurrency, one.requests, one.error_rate, one.rejected_429) == (1, 6, 0.0, 0)
    assert one.tokens_per_s > 0 and one.p95_latency_s >= one.p50_latency_s > 0 and one.mean_ttft_s > 0
    assert one.peak_rss_mb is not None and one.peak_rss_mb > 10  # from the server's /metrics
    assert four.rejected_429 > 0 and 0 < four.error_rate < 1  # capacity 2: some requests are refused
    json_path, png_path = write_outputs(tmp_path, {"edgevlm": results})
    assert json.loads(json_path.read_text())["edgevlm"][1]["concurrency"] == 4
    assert png_path.read_bytes().startswith(b"\x89PNG")
    assert "edgevlm" in capsys.readouterr().out


def test_rounds_become_one_row_of_medians_totals_and_the_highest_rss():
    row = median_result([level(4, 100, 1.0, 0.0, 200), level(4, 300, 3.0, 0.2, None), level(4, 200, 2.0, 0.1, 250)])
    assert (row.concurrency, row.requests, row.wall_s, row.rejected_429) == (4, 30, 6.0, 3)
    assert (row.tokens_per_s, row.mean_latency_s, row.p95_latency_s) == (200, 2.0, 2.0)
    assert row.error_rate == pytest.approx(0.1) and row.peak_rss_mb == 250


def test_scaling_is_against_one_request_at_a_time():
    assert scaling_lines("edgevlm", [level(1, 100), level(16, 450)]) == [
        "edgevlm: tokens/s at 16 concurrent = 4.50 x at 1"]
    assert scaling_lines("edgevlm", [level(4, 100), level(16, 450)]) == []


def test_repeats_rotate_the_levels_and_report_medians(fake_server, capsys):
    with fake_server(engine={"delay": 0.002}) as (url, _):
        results = bench(Target("edgevlm", url), [1, 2], bench_args("--repeats", "2"))
    out = capsys.readouterr().out.splitlines()
    rounds = [line.split()[:2] for line in out if line.startswith("edgevlm#")]
    assert rounds == [["edgevlm#1", "1"], ["edgevlm#1", "2"], ["edgevlm#2", "2"], ["edgevlm#2", "1"]]
    assert [r.concurrency for r in results] == [1, 2] and all(r.requests == 12 for r in results)
    assert "medians of 2 rounds:" in out


def test_a_second_server_in_one_command_gets_the_same_images(fake_server):
    args = bench_args()
    with fake_server(engine={"delay": 0.001}) as (url, _):
        bench(Target("edgevlm", url), [1], args)
        first = args.scenes_from
        bench(Target("hf", url), [1], args)
    assert first is not None and args.scenes_from == first
