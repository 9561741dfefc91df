from pathlib import Path

import numpy as np
import pytest

from edgevlm.calibration.embed_quant import quantize_int4, quantize_int8, write_quantized
from edgevlm.runtime.embed_table import EmbedTable


def _table(vocab: int = 50, hidden: int = 64) -> np.ndarray:
    table = np.random.default_rng(0).normal(0, 0.05, (vocab, hidden)).astype(np.float32)
    table[3] = 0.0  # an all-zero row must stay zero (no division by a zero scale)
    return table


def test_int8_rows_round_to_within_half_a_step() -> None:
    table = _table()
    values, scales = quantize_int8(table)
    assert values.dtype == np.int8 and scales.shape == (50,)
    restored = EmbedTable(values, "int8", scales).rows(np.arange(50), np.dtype(np.float32))
    assert np.all(np.abs(restored - table) <= scales[:, None] / 2 + 1e-7)
    assert not restored[3].any()


def test_int4_blocks_round_to_within_half_a_step() -> None:
    table = _table()
    values, scales = quantize_int4(table, block=32)
    assert values.dtype == np.uint8 and values.shape == (50, 32) and scales.shape == (50, 2)
    restored = EmbedTable(values, "int4", scales, block=32).rows(np.arange(50), np.dtype(np.float32))
    step = np.repeat(scales, 32, axis=1)
    assert np.all(np.abs(restored - table) <= step / 2 + 1e-7)
    assert not restored[3].any()


def test_rows_keep_the_ids_shape() -> None:
    values, scales = quantize_int4(_table(), block=32)
    table = EmbedTable(values, "int4", scales, block=32)
    ids = np.array([[1, 2, 3], [4, 4, 0]])
    rows = table.rows(ids, np.dtype(np.float16))
    assert rows.shape == (2, 3, 64) and rows.dtype == np.float16
    np.testing.assert_array_equal(rows[1, 0], rows[1, 1])


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_written_tables_load_back_through_the_runtime(tmp_path: Path, mode: str) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    table = _table(vocab=1000)
    np.save(src / "embed_tokens.npy", table)
    entry = write_quantized(src, {"file": "embed_tokens.npy", "dtype": "float32"}, dst, mode, chunk_rows=64)
    assert entry["dtype"] == mode and (dst / entry["scales"]).is_file()
    loaded = EmbedTable.load(dst, entry)
    ids = np.arange(1000)
    # chunked writing gives exactly the one-shot quantization
    values, scales = (quantize_int8(table) if mode == "int8" else quantize_int4(table))
    np.testing.assert_array_equal(loaded.rows(ids, np.dtype(np.float32)),
                                  EmbedTable(values, mode, scales, block=32).rows(ids, np.dtype(np.float32)))
    assert loaded.nbytes < table.nbytes / (3.5 if mode == "int8" else 6)


def test_int4_falls_back_to_int8_when_rows_do_not_split_into_blocks(tmp_path: Path) -> None:
    np.save(tmp_path / "embed_tokens.npy", _table(hidden=48))
    out = tmp_path / "out"
    out.mkdir()
    entry = write_quantized(tmp_path, {"file": "embed_tokens.npy"}, out, "int4")
    assert entry["dtype"] == "int8"
