"""`edgevlm doctor`: what this machine can run, and with --tensorrt a TensorRT self-test.

The report never fails for a missing optional piece; it says what is missing and how to get it.
Only `--tensorrt` (the self-test was asked for) exits non-zero when it cannot run or fails.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from edgevlm.runtime.backends.trt_preflight import GpuFacts, backend_problems, probe

JETSON_RELEASE = Path("/etc/nv_tegra_release")
BACKENDS: tuple[tuple[str, str], ...] = (
    ("onnxruntime", "cpu"),
    ("onnxruntime", "cuda"),
    ("tensorrt", "cuda"),
)


@dataclass(frozen=True, slots=True)
class Environment:
    facts: GpuFacts
    python: str
    machine: str
    edgevlm: str
    numpy: str
    jetson: str | None  # L4T release line on Jetson
    gpus: tuple[str, ...]  # "name (sm_XY, N MB)" per device, when torch can see them


def collect() -> Environment:
    import numpy

    from edgevlm import __version__

    facts = probe()
    return Environment(
        facts=facts,
        python=platform.python_version(),
        machine=f"{platform.system()} {platform.machine()}",
        edgevlm=__version__,
        numpy=numpy.__version__,
        jetson=_jetson_release(),
        gpus=_gpu_names(facts),
    )


def _jetson_release() -> str | None:
    try:
        return JETSON_RELEASE.read_text().splitlines()[0].strip("# ").strip()
    except (OSError, IndexError):
        return None


def _gpu_names(facts: GpuFacts) -> tuple[str, ...]:
    if not facts.torch_cuda or facts.cuda_devices == 0:
        return ()
    import torch

    names = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        names.append(f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory >> 20} MB)")
    return tuple(names)


def format_environment(env: Environment) -> list[str]:
    facts = env.facts
    missing = "not installed"
    torch = missing if facts.torch is None else facts.torch + ("" if facts.torch_cuda else " (CPU-only build)")
    gpu = ", ".join(env.gpus) if env.gpus else (
        f"{facts.cuda_devices} visible to the CUDA driver" if facts.cuda_devices else "none visible to the CUDA driver"
    )
    providers = ", ".join(facts.ort_providers) or "-"
    rows = [
        ("edgevlm", env.edgevlm),
        ("python", f"{env.python} on {env.machine}"),
        ("jetson", env.jetson or "no"),
        ("numpy", env.numpy),
        ("onnxruntime", missing if facts.onnxruntime is None else f"{facts.onnxruntime} ({providers})"),
        ("torch", torch),
        ("tensorrt", facts.tensorrt or missing),
        ("GPU", gpu),
    ]
    return [f"  {name:<12} {value}" for name, value in rows]


def format_backends(facts: GpuFacts) -> list[str]:
    lines = []
    for backend, device in BACKENDS:
        problems = backend_problems(backend, device, facts)
        label = f"{backend} --device {device}" if backend == "onnxruntime" else backend
        lines.append(f"  {label:<28} " + ("ready" if not problems else "unavailable: " + "; ".join(problems)))
    return lines


def run_doctor(tensorrt: bool, bundle: Path | None, limit: int, out: TextIO = sys.stdout) -> int:
    env = collect()
    print("edgevlm doctor", file=out)
    print("\n".join(format_environment(env)), file=out)
    print("backends:", file=out)
    print("\n".join(format_backends(env.facts)), file=out)
    if not tensorrt:
        return 0
    problems = backend_problems("tensorrt", "cuda", env.facts)
    if problems:
        print("tensorrt self-test: cannot run here: " + "; ".join(problems), file=out)
        return 1
    return _selftest(bundle, limit, out)


def _selftest(bundle: Path | None, limit: int, out: TextIO) -> int:
    from edgevlm.runtime.backends.trt_selftest import SelfTestError, format_result, run_selftest
    from edgevlm.server.demo_bundle import ensure_demo_bundle

    bundle_dir = bundle if bundle is not None else ensure_demo_bundle()
    print(f"tensorrt self-test on {bundle_dir}:", file=out)
    try:
        result = run_selftest(bundle_dir, limit, lambda line: print(line, file=sys.stderr, flush=True))
    except SelfTestError as exc:
        print(f"  cannot finish: {exc}", file=out)
        return 1
    print("\n".join(f"  {line}" for line in format_result(result)), file=out)
    return 0 if result.passed else 1
