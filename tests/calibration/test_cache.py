import json
from pathlib import Path

import pytest

from edgevlm.calibration.cache import CACHE_FILE, graph_cache_file, read_cache, split_cache, write_cache
from edgevlm.errors import UserError


def ort_entry(low: float, high: float) -> dict:
    def array(value: float) -> dict:
        return {"data": [value], "dtype": "float32", "CLS": "numpy.array"}

    return {"lowest": array(low), "highest": array(high), "CLS": "TensorData"}


def write_graph_caches(work: Path) -> None:
    for graph, bound in (("vision", 2.54), ("decoder", 12.7)):
        data = {"CLS": "TensorsData", "data": {f"{graph}_x": ort_entry(-bound, bound)}, "smooth_quant": False}
        graph_cache_file(work, graph).write_text(json.dumps(data))


def test_cache_merges_graphs_with_their_int8_scales(tmp_path: Path) -> None:
    write_graph_caches(tmp_path)
    cache = write_cache(tmp_path / CACHE_FILE, tmp_path, "minmax", 8, "demo")
    assert cache["scales"]["vision"]["vision_x"] == pytest.approx(0.02)
    assert cache["scales"]["decoder"]["decoder_x"] == pytest.approx(0.1)
    assert read_cache(tmp_path / CACHE_FILE) == cache


def test_split_restores_the_ort_caches_for_reuse(tmp_path: Path) -> None:
    write_graph_caches(tmp_path)
    write_cache(tmp_path / CACHE_FILE, tmp_path, "minmax", 8, "demo")
    reuse = tmp_path / "reuse"
    reuse.mkdir()
    split_cache(tmp_path / CACHE_FILE, reuse, "minmax")
    for graph in ("vision", "decoder"):
        assert json.loads(graph_cache_file(reuse, graph).read_text()) == json.loads(
            graph_cache_file(tmp_path, graph).read_text())
    with pytest.raises(UserError, match="calibrated with --method minmax, not entropy"):
        split_cache(tmp_path / CACHE_FILE, reuse, "entropy")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not JSON"),
    ('{"format": "something-else"}', "not an edgevlm calibration cache"),
    ('{"format": "edgevlm-calibration-cache", "version": 1, "ort": {"vision": {}}}', "no ranges for the decoder"),
])
def test_bad_caches_are_one_line_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cache.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_cache(path)
