from pathlib import Path

import numpy as np
import pytest

from edgevlm.runtime.embed_table import EmbedTable


def test_a_float_table_is_gathered_as_it_is(tmp_path: Path) -> None:
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "embed_tokens.npy", table)
    loaded = EmbedTable.load(tmp_path, {"file": "embed_tokens.npy"})
    assert loaded.dtype == "float32" and loaded.nbytes == table.nbytes
    np.testing.assert_array_equal(loaded.rows(np.array([[3, 0]]), np.dtype(np.float32)), table[[[3, 0]]])


def test_int8_rows_are_scaled_per_row() -> None:
    values = np.array([[1, -2], [127, 0]], np.int8)
    table = EmbedTable(values, "int8", np.array([0.5, 0.01], np.float32))
    np.testing.assert_allclose(table.rows(np.array([1, 0]), np.dtype(np.float32)), [[1.27, 0], [0.5, -1.0]])


def test_int4_nibbles_unpack_low_first() -> None:
    # row [q0, q1, q2, q3] = [-8, 7, 0, 1] stored +8: bytes (0 | 15 << 4), (8 | 9 << 4)
    values = np.array([[0 | 15 << 4, 8 | 9 << 4]], np.uint8)
    table = EmbedTable(values, "int4", np.array([[0.5, 2.0]], np.float32), block=2)
    np.testing.assert_allclose(table.rows(np.array([0]), np.dtype(np.float32)), [[-4.0, 3.5, 0.0, 2.0]])


def test_a_quantized_table_needs_scales() -> None:
    with pytest.raises(ValueError, match="scales"):
        EmbedTable(np.zeros((2, 2), np.int8), "int8")
    with pytest.raises(ValueError, match="dtype"):
        EmbedTable(np.zeros((2, 2), np.int8), "int3")


def test_a_bad_manifest_entry_is_a_bundle_error(tmp_path: Path) -> None:
    from edgevlm.runtime.bundle import BundleError

    np.save(tmp_path / "embed_tokens.npy", np.zeros((2, 2), np.uint16))
    with pytest.raises(BundleError, match="bfloat16"):
        EmbedTable.load(tmp_path, {"file": "embed_tokens.npy", "dtype": "bfloat16"})
