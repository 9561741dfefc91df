import numpy as np

from edgevlm.calibration.awq import rtn_dequant, search_scale


def test_rtn_is_exact_on_values_of_the_grid() -> None:
    w = np.tile(np.arange(16, dtype=np.float32)[:, None] * 0.5, (2, 3))  # [32, 3], 16 levels per block
    np.testing.assert_allclose(rtn_dequant(w, 32), w, atol=1e-6)


def test_rtn_error_is_within_half_a_step_per_block() -> None:
    w = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    error = np.abs(rtn_dequant(w, 32) - w).reshape(2, 32, 5)
    blocks = w.reshape(2, 32, 5)
    step = (np.maximum(blocks.max(1), 0) - np.minimum(blocks.min(1), 0)) / 15
    assert np.all(error <= step[:, None, :] / 2 + 1e-6)


def test_scales_never_do_worse_than_plain_rounding() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 64)).astype(np.float32)
    x[:, :4] *= 30.0  # a few outlier channels, the case AWQ is for
    w = rng.normal(size=(64, 16)).astype(np.float32)
    scale = search_scale(x, [w], 32)

    def error(s: np.ndarray) -> float:
        return float(np.mean(((x / s) @ rtn_dequant(w * s[:, None], 32) - x @ w) ** 2))

    assert error(scale) < error(np.ones(64, np.float32))
