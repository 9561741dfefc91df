"""Reading the source bundle and writing the quantized one: a normal bundle (BUNDLE.md) with its
graphs replaced, every other file copied, the manifest's `graphs`, `files` and `quantization`
rewritten and every sha256 recomputed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from edgevlm.errors import UserError

GRAPHS: tuple[str, ...] = ("vision", "decoder")
MANIFEST = "manifest.json"
# A bundle is read by whichever user serves it; ORT writes external data owner-only (0600).
FILE_MODE = 0o644


def read_source(bundle_dir: Path) -> dict[str, Any]:
    """The source manifest, after the checks that make a bundle quantizable (one-line UserErrors)."""
    from edgevlm.runtime.bundle import load_bundle

    if not bundle_dir.is_dir():
        raise UserError(f"bundle folder not found: {bundle_dir}")
    manifest = load_bundle(bundle_dir).manifest
    done = manifest.get("quantization")
    if done:
        mode = done.get("mode", "?") if isinstance(done, dict) else "?"
        raise UserError(f"{bundle_dir} is already quantized ({mode}); quantize its float bundle instead")
    if manifest.get("dtype") != "fp32":
        raise UserError(
            f"{bundle_dir} is {manifest.get('dtype')}; quantize needs an fp32 bundle (edgevlm export --dtype fp32)"
        )
    return manifest


def graph_path(bundle_dir: Path, manifest: dict[str, Any], graph: str) -> Path:
    return bundle_dir / manifest["graphs"][graph]["file"]


def graph_files(manifest: dict[str, Any]) -> set[str]:
    """The graph files, their external data and their CPU forms, by name. A source's CPU form is
    never copied: it reads the source graph's weights (an fp32 bundle's decoder.cpu.onnx), and the
    quantized bundle writes its own."""
    names = {manifest["graphs"][g]["file"] for g in GRAPHS}
    forms = {manifest["graphs"][g]["cpu_form"]["file"] for g in GRAPHS if manifest["graphs"][g].get("cpu_form")}
    return names | {f"{name}.data" for name in names} | forms


def cpu_form_name(graph_file: str) -> str:
    """`decoder.onnx` -> `decoder.cpu.onnx` (calibration/cpu_form.py)."""
    return f"{Path(graph_file).stem}.cpu.onnx"


def copy_assets(bundle_dir: Path, manifest: dict[str, Any], staging: Path,
                skip: frozenset[str] = frozenset()) -> list[str]:
    """Copy every file of the bundle except its graphs, its manifest and `skip`; returns the names
    copied. Hidden files are tools' stamps (the server's demo-bundle cache marker), not bundle content."""
    skipped = graph_files(manifest) | {MANIFEST} | set(skip)
    copied = []
    for path in sorted(bundle_dir.iterdir()):
        if path.is_file() and path.name not in skipped and not path.name.startswith("."):
            shutil.copy2(path, staging / path.name)
            copied.append(path.name)
    return copied


def copy_graph(bundle_dir: Path, manifest: dict[str, Any], graph: str, staging: Path) -> None:
    """A graph kept as it is (int4 leaves the vision graph float)."""
    name = manifest["graphs"][graph]["file"]
    for file in (name, f"{name}.data"):
        if (bundle_dir / file).is_file():
            shutil.copy2(bundle_dir / file, staging / file)


def graph_bytes(folder: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Bytes per graph (graph file, its external data, its CPU form) and in total, for the manifest."""
    sizes = {}
    for graph in GRAPHS:
        name = manifest["graphs"][graph]["file"]
        files = (name, f"{name}.data", cpu_form_name(name))
        sizes[graph] = sum((folder / f).stat().st_size for f in files if (folder / f).is_file())
    sizes["total"] = sizes["vision"] + sizes["decoder"]
    return sizes


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def write_manifest(staging: Path, source: dict[str, Any], quantization: dict[str, Any]) -> dict[str, Any]:
    """The quantized bundle's manifest: the source's, with new graphs, files and quantization."""
    from edgevlm.export import manifest as schema

    for path in staging.iterdir():
        os.chmod(path, FILE_MODE)
    manifest = json.loads(json.dumps(source))
    manifest["created"] = schema.now_iso()
    manifest["tool_versions"] = {**source.get("tool_versions", {}), **schema.tool_versions()}
    manifest["graphs"] = {g: schema.graph_signature(staging / source["graphs"][g]["file"]) for g in GRAPHS}
    for entry in manifest["graphs"].values():
        cpu = cpu_form_name(entry["file"])
        if (staging / cpu).is_file():  # it reads the graph's own external data file
            entry["cpu_form"] = {"file": cpu, "external_data": entry["external_data"]}
    names = [p.name for p in staging.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")]
    manifest["files"] = schema.file_entries(staging, names)
    manifest["quantization"] = quantization
    schema.write_manifest(staging, manifest)
    return manifest
