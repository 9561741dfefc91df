"""`edgevlm serve`: the OpenAI-compatible HTTP server and web page on uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from edgevlm.errors import UserError

API_KEY_ENV = "EDGEVLM_API_KEY"
BUNDLE_ENV = "EDGEVLM_BUNDLE"
DEMO_MODEL_NAME = "edgevlm-demo"
DEFAULT_STREAM_INTERVAL_MS = 20.0  # 50 updates a second: smoother than anyone reads
# The engine thread needs the GIL back the moment an ONNX Runtime call returns; at Python's
# default 5 ms switch interval the event loop thread (JSON, SSE) could hold it for a whole decode step.
GIL_SWITCH_INTERVAL_S = 0.0005


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a bundle over an OpenAI-compatible HTTP API and a web page",
        description="Serve a bundle (default: the demo model, exported on first use) with an "
        "OpenAI-compatible API (/v1/chat/completions), /vqa, /metrics, /health, /ready and a web page at /.",
    )
    p.add_argument(
        "--bundle",
        type=Path,
        default=Path(os.environ[BUNDLE_ENV]) if os.environ.get(BUNDLE_ENV) else None,
        help=f"bundle folder from `edgevlm export` (or set {BUNDLE_ENV}; default: the demo model)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (or set {API_KEY_ENV})")
    p.add_argument("--model-name", help="model id clients send (default: the bundle folder name)")
    p.add_argument("--max-queue", type=int, help="waiting requests before 429 (engine default if unset)")
    p.add_argument("--kv-cache-mb", type=float,
                   help="KV cache budget in MiB, committed at start (default: every row at the bundle's max_seq_len)")
    p.add_argument("--prefix-cache-mb", type=float,
                   help="MiB of finished prompts' K/V kept for prefix reuse, e.g. multi-turn (default 64; 0: off)")
    p.add_argument("--threads", type=int,
                   help="ONNX Runtime intra-op threads for the decoder and the vision encoder (default: the "
                        "machine's physical cores)")
    p.add_argument("--ort-spin", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX Runtime's threads spin between a call's ops, never after it returns "
                        "(default on; --no-ort-spin: they sleep between ops, for a machine shared with other work)")
    p.add_argument("--stream-interval-ms", type=float, default=DEFAULT_STREAM_INTERVAL_MS,
                   help="while several requests stream, each sends at most one chunk per this many ms (a chunk "
                        f"then carries several tokens); alone, every token is sent at once (default "
                        f"{DEFAULT_STREAM_INTERVAL_MS:g}; 0: a chunk per token always)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow this browser origin")
    p.add_argument(
        "--allow-image-host",
        action="append",
        default=[],
        metavar="HOST",
        help="allow http(s) image URLs from HOST",
    )
    p.add_argument("--max-image-mb", type=float, default=20.0, help="largest image accepted (default 20)")
    p.add_argument("--max-images", type=int, default=8, help="images per request (default 8)")
    p.add_argument("--grace-period", type=float, default=30.0, help="seconds to finish requests on SIGTERM")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def server_config(args: argparse.Namespace, model_name: str):  # -> ServerConfig
    from edgevlm.server.config import MB, ServerConfig

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and not api_key.strip():
        raise UserError("--api-key must not be empty")
    if args.max_image_mb <= 0 or args.max_images < 1:
        raise UserError("--max-image-mb must be > 0 and --max-images >= 1")
    max_image_bytes = int(args.max_image_mb * MB)
    return ServerConfig(
        model_name=model_name,
        api_key=api_key,
        cors_origins=tuple(args.cors_origin),
        image_hosts=tuple(h.lower() for h in args.allow_image_host),
        max_image_bytes=max_image_bytes,
        max_body_bytes=max(32 * MB, max_image_bytes * 3 // 2 + MB),
        max_images=args.max_images,
        drain_timeout_s=args.grace_period,
    )


def resolve_bundle(args: argparse.Namespace) -> tuple[Path, str]:
    if args.bundle is None:
        from edgevlm.server.demo_bundle import ensure_demo_bundle

        return ensure_demo_bundle(), args.model_name or DEMO_MODEL_NAME
    bundle = args.bundle.expanduser().resolve()
    manifest = bundle / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{args.bundle} is not a bundle (no manifest.json): make one with `edgevlm export`")
    try:
        json.loads(manifest.read_text())
    except ValueError as exc:
        raise UserError(f"{manifest} is not valid JSON: {exc}") from exc
    return bundle, args.model_name or bundle.name


def check_args(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1-65535, got {args.port}")
    if args.max_queue is not None and args.max_queue < 0:
        raise UserError(f"--max-queue must be >= 0, got {args.max_queue}")
    if args.kv_cache_mb is not None and args.kv_cache_mb <= 0:
        raise UserError(f"--kv-cache-mb must be > 0, got {args.kv_cache_mb}")
    if args.prefix_cache_mb is not None and args.prefix_cache_mb < 0:
        raise UserError(f"--prefix-cache-mb must be >= 0, got {args.prefix_cache_mb}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.grace_period < 0:
        raise UserError(f"--grace-period must be >= 0, got {args.grace_period}")
    if args.stream_interval_ms < 0:
        raise UserError(f"--stream-interval-ms must be >= 0, got {args.stream_interval_ms}")


def _drained(signum: int, frame: object) -> None:
    logging.getLogger("edgevlm.server").info("SIGTERM: in-flight requests drained, exiting")


def run(args: argparse.Namespace) -> int:
    # transformers imports torch whenever it is installed (for its config helpers); the serving
    # process needs only the tokenizer and the numpy image processor, so hide torch from it (as if
    # not installed: ~1 GB less memory). The one-time demo export runs in its own process.
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    import uvicorn

    from edgevlm.server.app import create_app
    from edgevlm.server.engine import bundle_engine_factory
    from edgevlm.server.malloc import tune_malloc

    check_args(args)
    tune_malloc()  # before uvicorn and the engine start their threads
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bundle, model_name = resolve_bundle(args)
    config = server_config(args, model_name)
    factory = bundle_engine_factory(bundle, max_queue=args.max_queue, kv_cache_mb=args.kv_cache_mb,
                                    prefix_cache_mb=args.prefix_cache_mb, threads=args.threads, spin_wait=args.ort_spin,
                                    stream_interval_s=args.stream_interval_ms / 1000)
    app = create_app(config, factory)
    logging.getLogger("edgevlm.server").info(
        "serving %s as %r on http://%s:%d", bundle, model_name, args.host, args.port
    )
    # uvicorn drains on SIGTERM, then re-raises the signal under the handler it found at start:
    # this one, so a clean drain exits 0 instead of dying by the signal.
    signal.signal(signal.SIGTERM, _drained)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=max(1, round(args.grace_period)),
    )
    return 0
