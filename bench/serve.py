"""`edgevlm bench serve`: load-test an OpenAI-compatible server at rising concurrency.

For each level: mean/p50/p95 latency, TTFT, generated tokens/s, error rate (429s counted apart)
and the server's peak RSS. Writes JSON and a PNG plot. `--baseline hf` also starts a naive
transformers server (one request at a time, same model) and prints both side by side.
Standard library + Pillow only, so it runs wherever the server runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgevlm.bench.serve_workload import MAX_FIRST_SCENE, WORKLOADS, Workload
from edgevlm.errors import UserError


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int  # HTTP status; 0 = connection failed; 200 with error=True = error event mid-stream
    latency_s: float
    ttft_s: float | None
    tokens: int
    error: bool


@dataclass(frozen=True, slots=True)
class LevelResult:
    concurrency: int
    requests: int
    wall_s: float
    mean_latency_s: float
    p50_latency_s: float
    p95_latency_s: float
    mean_ttft_s: float
    p50_ttft_s: float
    tokens_per_s: float
    error_rate: float
    rejected_429: int
    peak_rss_mb: float | None


def register_serve(bench_subparsers: argparse._SubParsersAction) -> None:
    p = bench_subparsers.add_parser(
        "serve",
        help="load-test a running server (or start one) at several concurrency levels",
        description="Streams demo questions with images at each concurrency level and reports latency, "
        "TTFT, tokens/s, error rate and server RSS.",
    )
    p.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8080 (default: start `edgevlm serve`)")
    p.add_argument("--bundle", type=Path, help="bundle for the server started when --url is not given")
    p.add_argument("--concurrency", default="1,4,8,16,32,64", help="comma-separated levels")
    p.add_argument("--requests", type=int, default=0, help="requests per level (default max(16, 2 x level))")
    p.add_argument("--max-tokens", type=int, default=48, help="max_tokens per request")
    p.add_argument("--min-tokens", type=int, default=0,
                   help="vLLM-style min_tokens per request: answers of fixed length (EOS held back), as "
                        "vLLM's serving benchmark does with ignore_eos; the HF baseline server ignores it")
    p.add_argument("--workload", choices=WORKLOADS, default="upload",
                   help="upload: every request a new image; chat: 4 questions per new image (serve_workload.py)")
    p.add_argument("--max-queue", type=int, help="--max-queue for the server this command starts")
    p.add_argument("--api-key", help="bearer key for the server")
    p.add_argument("--baseline", choices=["hf"], help="also measure a naive transformers server")
    p.add_argument("--hf-model", type=Path, help="checkpoint for --baseline hf (default: the demo model)")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench-serve"), help="folder for JSON and PNG")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--scenes-from", type=int,
                   help="first scene of the generated images (default: drawn at random, so a server that served "
                        "an earlier run has not seen them; printed, to repeat a run exactly)")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every level this many times, the levels' order rotated each round, and report "
                        "each level's medians: on a shared machine, ratios between levels then come from the "
                        "same stretch of time")
    p.set_defaults(run=run)


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise UserError(f"--concurrency takes integers like 1,4,8, got {text!r}") from exc
    if not levels or min(levels) < 1:
        raise UserError("--concurrency levels must be >= 1")
    return levels


# --- requests -----------------------------------------------------------------------------------
def one_request(url: str, body: bytes, api_key: str | None, timeout: float) -> Outcome:
    parts = urlsplit(url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    started = time.perf_counter()
    try:
        connection.request("POST", "/v1/chat/completions", body, headers)
        response = connection.getresponse()
        if response.status != 200:
            response.read()
            return Outcome(response.status, time.perf_counter() - started, None, 0, True)
        return read_stream(response, started)
    except (OSError, http.client.HTTPException):
        return Outcome(0, time.perf_counter() - started, None, 0, True)
    finally:
        connection.close()


def read_stream(response: http.client.HTTPResponse, started: float) -> Outcome:
    ttft = None
    tokens = chunks = 0
    error = False
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        event = json.loads(line[5:])
        if "error" in event:
            error = True
            continue
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices", []):
            if choice.get("delta", {}).get("content"):
                ttft = ttft if ttft is not None else time.perf_counter() - started
                chunks += 1
    return Outcome(200, time.perf_counter() - started, ttft, tokens or chunks, error)


# --- server memory --------------------------------------------------------------------------------
def server_rss_mb(url: str, pid: int | None, api_key: str | None) -> float | None:
    """From /proc when this command started the server, else the server's /metrics."""
    if pid is not None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
    request = urllib.request.Request(f"{url}/metrics")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        text = urllib.request.urlopen(request, timeout=5).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1]) / (1024 * 1024)
    return None


class PeakRSS:
    def __init__(self, url: str, pid: int | None, api_key: str | None) -> None:
        self.url, self.pid, self.api_key = url, pid, api_key
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            rss = server_rss_mb(self.url, self.pid, self.api_key)
            if rss is not None:
                self.peak = max(self.peak or 0.0, rss)
            self._stop.wait(0.5)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- one level, all levels ---------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_level(target: Target, bodies: list[bytes], concurrency: int, timeout: float) -> LevelResult:
    count = len(bodies)
    with PeakRSS(target.url, target.pid, target.api_key) as rss, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        outcomes = list(pool.map(lambda body: one_request(target.url, body, target.api_key, timeout), bodies))
        wall = time.perf_counter() - started
    good = [o for o in outcomes if not o.error]
    latencies = [o.latency_s for o in good]
    ttfts = [o.ttft_s for o in good if o.ttft_s is not None]
    return LevelResult(
        concurrency=concurrency,
        requests=count,
        wall_s=wall,
        mean_latency_s=statistics.fmean(latencies) if latencies else float("nan"),
        p50_latency_s=percentile(latencies, 0.5),
        p95_latency_s=percentile(latencies, 0.95),
        mean_ttft_s=statistics.fmean(ttfts) if ttfts else float("nan"),
        p50_ttft_s=percentile(ttfts, 0.5),
        tokens_per_s=sum(o.tokens for o in good) / wall,
        error_rate=1 - len(good) / count,
        rejected_429=sum(o.status == 429 for o in outcomes),
        peak_rss_mb=rss.peak,
    )


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    pid: int | None = None
    api_key: str | None = None


def model_id(target: Target) -> str:
    request = urllib.request.Request(f"{target.url}/v1/models")
    if target.api_key:
        request.add_header("Authorization", f"Bearer {target.api_key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"][0]["id"]


def bench(target: Target, levels: list[int], args: argparse.Namespace) -> list[LevelResult]:
    if args.scenes_from is None:  # drawn once per command: a --baseline server gets the same images
        args.scenes_from = random.randrange(1_000_000) * 1000
        print(f"bench: images from scene {args.scenes_from} (--scenes-from {args.scenes_from} repeats them)",
              file=sys.stderr)
    workload = Workload(args.workload, model_id(target), args.max_tokens, args.min_tokens, args.scenes_from)
    one_request(target.url, workload.bodies(1)[0], target.api_key, args.timeout)  # warm the code paths
    repeats = args.repeats
    runs: dict[int, list[LevelResult]] = {level: [] for level in levels}
    for round_ in range(repeats):
        shift = round_ % len(levels)
        for level in levels[shift:] + levels[:shift]:
            count = args.requests or max(16, 2 * level)
            result = run_level(target, workload.bodies(count), level, args.timeout)
            name = target.name if repeats == 1 else f"{target.name}#{round_ + 1}"
            print(format_row(name, result), flush=True)
            runs[level].append(result)
    results = [median_result(runs[level]) for level in levels]
    if repeats > 1:
        print(f"medians of {repeats} rounds:", flush=True)
        for result in results:
            print(format_row(target.name, result), flush=True)
    return results


def median_result(runs: list[LevelResult]) -> LevelResult:
    """One level's rounds as one row: medians of the timings, totals of the counts, the highest RSS."""
    if len(runs) == 1:
        return runs[0]
    def med(field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs)

    requests = sum(r.requests for r in runs)
    peaks = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    return LevelResult(
        concurrency=runs[0].concurrency,
        requests=requests,
        wall_s=sum(r.wall_s for r in runs),
        mean_latency_s=med("mean_latency_s"),
        p50_latency_s=med("p50_latency_s"),
        p95_latency_s=med("p95_latency_s"),
        mean_ttft_s=med("mean_ttft_s"),
        p50_ttft_s=med("p50_ttft_s"),
        tokens_per_s=med("tokens_per_s"),
        error_rate=sum(r.error_rate * r.requests for r in runs) / requests,
        rejected_429=sum(r.rejected_429 for r in runs),
        peak_rss_mb=max(peaks) if peaks else None,
    )


def scaling_lines(name: str, results: list[LevelResult]) -> list[str]:
    """Aggregate tokens/s of each level against one request at a time (when level 1 was run)."""
    one = next((r for r in results if r.concurrency == 1), None)
    if one is None or not one.tokens_per_s > 0:
        return []
    return [f"{name}: tokens/s at {r.concurrency} concurrent = {r.tokens_per_s / one.tokens_per_s:.2f} x at 1"
            for r in results if r.concurrency > 1]


# --- servers this command starts ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], url: str, timeout: float = 600.0) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"server exited with {process.returncode}: {' '.join(command)}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise UserError(f"server not ready after {timeout:.0f}s: {' '.join(command)}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def edgevlm_command(args: argparse.Namespace, port: int) -> list[str]:
    command = [sys.executable, "-m", "edgevlm.cli", "serve", "--port", str(port), "--log-level", "warning"]
    if args.bundle:
        command += ["--bundle", str(args.bundle)]
    if args.max_queue is not None:
        command += ["--max-queue", str(args.max_queue)]
    if args.api_key:
        command += ["--api-key", args.api_key]
    return command


def hf_command(args: argparse.Namespace, port: int) -> list[str]:
    from edgevlm.server.demo_bundle import demo_model_dir

    model = args.hf_model or demo_model_dir()
    module = "edgevlm.bench.serve_hf_baseline"
    return [sys.executable, "-m", module, "--model", str(model), "--port", str(port)]


def measure_started(name: str, command: list[str], port: int, levels: list[int], args) -> list[LevelResult]:
    url = f"http://127.0.0.1:{port}"
    print(f"starting {name}: {' '.join(command)}", file=sys.stderr, flush=True)
    process = start_server(command, url)
    try:
        return bench(Target(name, url, process.pid, args.api_key if name == "edgevlm" else None), levels, args)
    finally:
        stop_server(process)


# --- output -------------------------------------------------------------------------------------------
HEADER = (
    f"{'server':<9} {'conc':>4} {'reqs':>5} {'mean s':>7} {'p50 s':>7} {'p95 s':>7} {'ttft s':>7} "
    f"{'tok/s':>8} {'errors':>7} {'429s':>5} {'rss MB':>7}"
)


def format_row(name: str, r: LevelResult) -> str:
    rss = f"{r.peak_rss_mb:7.0f}" if r.peak_rss_mb is not None else f"{'-':>7}"
    return (
        f"{name:<9} {r.concurrency:>4} {r.requests:>5} {r.mean_latency_s:7.2f} {r.p50_latency_s:7.2f} "
        f"{r.p95_latency_s:7.2f} {r.mean_ttft_s:7.3f} {r.tokens_per_s:8.1f} {r.error_rate:7.1%} "
        f"{r.rejected_429:>5} {rss}"
    )


def write_outputs(out: Path, results: dict[str, list[LevelResult]]) -> tuple[Path, Path]:
    from edgevlm.bench.serve_plot import plot_levels

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench-serve.json"
    json_path.write_text(json.dumps({k: [asdict(r) for r in v] for k, v in results.items()}, indent=2) + "\n")
    png_path = out / "bench-serve.png"
    plot_levels(results, png_path)
    return json_path, png_path


def run(args: argparse.Namespace) -> int:
    levels = parse_levels(args.concurrency)
    if args.scenes_from is not None and not 0 <= args.scenes_from < MAX_FIRST_SCENE:
        raise UserError(f"--scenes-from must be in [0, {MAX_FIRST_SCENE}), got {args.scenes_from}")
    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    if args.url and args.max_queue is not None:
        raise UserError("--max-queue applies to a server this command starts: drop --url, or restart yours")
    print(HEADER, flush=True)
    results: dict[str, list[LevelResult]] = {}
    if args.url:
        results["edgevlm"] = bench(Target("edgevlm", args.url.rstrip("/"), api_key=args.api_key), levels, args)
    else:
        port = free_port()
        results["edgevlm"] = measure_started("edgevlm", edgevlm_command(args, port), port, levels, args)
    if args.baseline == "hf":
        port = free_port()
        results["hf"] = measure_started("hf", hf_command(args, port), port, levels, args)
        print("\n" + HEADER)
        for pair in zip(*results.values(), strict=True):
            for name, result in zip(results, pair, strict=True):
                print(format_row(name, result))
    for name, rows in results.items():
        for line in scaling_lines(name, rows):
            print(line)
    json_path, png_path = write_outputs(args.out, results)
    print(f"wrote {json_path} and {png_path}")
    return 0
