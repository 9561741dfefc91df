"""decoder.cpu.onnx, the decoder's in-place CPU form: its attention nodes, and what the manifest says
of it. Its outputs against HF, with the present outputs bound to the past memory as the runtime
runs it, are tested with the portable graph's in test_onnx_graphs.py."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import onnx


def test_one_attention_node_per_layer_and_no_cache_copies(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    graph = onnx.load(str(bundle_dir / "decoder.cpu.onnx"), load_external_data=False).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["GroupQueryAttention"] == manifest["architecture"]["num_layers"]
    past = {i.name for i in graph.input if i.name.startswith("past_")}
    readers = {n.op_type for n in graph.node if past & set(n.input)}
    assert readers <= {"GroupQueryAttention", "Shape"}  # Shape reads no data: nothing slices or copies a cache


def test_the_manifest_names_the_form_and_it_reads_the_decoders_weights(bundle_dir: Path,
                                                                        manifest: dict[str, Any]) -> None:
    form = manifest["graphs"]["decoder"]["cpu_form"]
    assert form["file"] == "decoder.cpu.onnx" and form["external_data"] == "decoder.onnx.data"
    assert set(form["inputs"]) >= {"seqlens_k", "total_sequence_length"} and "attention_bias" not in form["inputs"]
    assert not (bundle_dir / "decoder.cpu.onnx.data").exists()
    model = onnx.load(str(bundle_dir / "decoder.cpu.onnx"), load_external_data=False)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"decoder.onnx.data"}
    assert (bundle_dir / "decoder.cpu.onnx").stat().st_size < (bundle_dir / "decoder.onnx.data").stat().st_size / 10
    assert manifest["validation"]["cpu_form"]["greedy_matched"] == manifest["validation"]["cpu_form"]["greedy_tokens"]
