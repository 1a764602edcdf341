"""fit3d_jax.models.resample against torch.nn.functional.interpolate itself."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fit3d_jax.models.resample import bicubic_matrix, resize_bicubic

# (input size, output size or None, scale_factor or None): up- and down-sampling, the DINOv2
# position-grid cases (37 -> token grids, with and without the +0.1 offset), tiny and odd sizes.
CASES = [
    (37, 16, None),
    (37, 17, None),
    (37, 41, None),
    (37, 62, None),
    (37, 23, None),
    (37, None, 16.1 / 37),
    (37, None, 41.1 / 37),
    (37, None, 62.1 / 37),
    (37, None, 0.3),
    (37, None, 2.7),
    (10, 37, None),
    (100, 7, None),
    (7, 100, None),
    (5, 3, None),
    (1, 5, None),
    (5, 1, None),
]


def _torch_resize_1d(signal: np.ndarray, out_size, scale_factor, antialias: bool) -> np.ndarray:
    """Resizes (n, c) along n with torch's 2-D bicubic; the second axis (size c, unchanged) is
    an identity resize. (c > 1: torch's antialias kernel mishandles axes of size 1.)"""
    x = torch.from_numpy(signal[None, None].copy())  # (1, 1, n, c)
    c = signal.shape[1]
    kwargs = dict(scale_factor=(scale_factor, 1.0)) if scale_factor else dict(size=(out_size, c))
    y = F.interpolate(x, mode="bicubic", align_corners=False, antialias=antialias, **kwargs)
    return y[0, 0].numpy()


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("in_size,out_size,scale_factor", CASES)
def test_matrix_matches_torch_in_float64(in_size, out_size, scale_factor, antialias):
    signal = np.random.default_rng(in_size).standard_normal((in_size, 5))
    expected = _torch_resize_1d(signal, out_size, scale_factor, antialias)
    out_size = out_size or math.floor(in_size * scale_factor)
    matrix = bicubic_matrix(in_size, out_size, scale_factor=scale_factor, antialias=antialias)
    assert matrix.shape == (out_size, in_size)
    np.testing.assert_allclose(matrix @ signal, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize(
    "size,scale_factors", [((17, 23), None), ((41, 62), None), ((16, 23), (16.1 / 37, 23.1 / 37)), ((12, 80), None)]
)
def test_resize_bicubic_matches_torch_2d(size, scale_factors, antialias):
    grid = np.random.default_rng(0).standard_normal((37, 37, 8)).astype(np.float32)
    x = torch.from_numpy(grid).permute(2, 0, 1)[None]
    kwargs = dict(scale_factor=scale_factors) if scale_factors else dict(size=size)
    expected = F.interpolate(x, mode="bicubic", align_corners=False, antialias=antialias, **kwargs)
    expected = expected[0].permute(1, 2, 0).numpy()
    got = np.asarray(resize_bicubic(grid, size, scale_factors=scale_factors, antialias=antialias))
    assert got.shape == expected.shape
    # torch computes its weights in float32; ours are exact float64 rounded once.
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


def test_resize_bicubic_keeps_dtype_and_batch_axes():
    grid = np.random.default_rng(1).standard_normal((2, 9, 9, 3)).astype(np.float32)
    out = resize_bicubic(grid.astype(np.float16), (4, 5))
    assert out.shape == (2, 4, 5, 3) and out.dtype == np.float16


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="out_size=0"):
        bicubic_matrix(5, 0)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        resize_bicubic(np.zeros((5, 3)), (2, 2))
