"""`edgevlm bench serve` (bench/serve.py) against the fake-engine server."""

import argparse
import json

import pytest

from edgevlm.bench.serve import Target, bench, parse_levels, register_serve, write_outputs
from edgevlm.errors import UserError


def bench_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register_serve(parser.add_subparsers())
    return parser.parse_args(["serve", "--requests", "6", "--max-tokens", "8"])


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
