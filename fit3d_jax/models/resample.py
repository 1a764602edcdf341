"""PyTorch's bicubic resampling (``F.interpolate(mode="bicubic")``) as per-axis weight matrices.

DINOv2 resizes its position-embedding grid with PyTorch's bicubic kernels; ``jax.image.resize``
uses a different cubic (a = -0.5, no index clamping), so exact parity needs these kernels.
Shapes are static, so the matrices are built in float64 numpy at trace time and applied as
constants with one einsum.

Two PyTorch kernels are reproduced (``align_corners=False``):

* plain bicubic (``antialias=False``): Keys cubic with a = -0.75 on the four neighbours of
  ``src = (dst + 0.5) * scale - 0.5``; out-of-range neighbour indices are clamped to the border
  (negative ``src`` is *not* clamped, unlike the linear modes).
* antialiased bicubic (``antialias=True``, PIL's filter): Keys cubic with a = -0.5, stretched by
  ``scale`` when downsampling, evaluated on all input samples within its support around
  ``center = (dst + 0.5) * scale`` and normalised to sum to one (no index clamping).

``scale`` is input/output size, or ``1 / scale_factor`` when a scale factor is given (PyTorch
then uses the factor itself, not the ratio of the rounded sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_A_PLAIN = -0.75  # PyTorch's upsample_bicubic2d
_A_ANTIALIAS = -0.5  # PyTorch's _upsample_bicubic2d_aa (PIL's bicubic filter)


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel, zero outside |x| < 2."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _source_scale(in_size: int, out_size: int, scale_factor: float | None) -> float:
    return 1.0 / scale_factor if scale_factor else in_size / out_size


def _plain_weights(in_size: int, out_size: int, scale: float) -> np.ndarray:
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    base = np.floor(src)
    t = src - base
    taps = np.arange(-1, 3)  # the four neighbours base-1 .. base+2
    weights = _keys_cubic(t[:, None] - taps[None, :], _A_PLAIN)
    index = np.clip(base[:, None].astype(np.int64) + taps[None, :], 0, in_size - 1)
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.repeat(np.arange(out_size), 4), index.ravel()), weights.ravel())
    return matrix


def _antialias_weights(in_size: int, out_size: int, scale: float) -> np.ndarray:
    stretch = max(scale, 1.0)  # the filter widens only when downsampling
    support = 2.0 * stretch
    max_taps = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.floor(center - support + 0.5), 0).astype(np.int64)
    last = np.minimum(np.floor(center + support + 0.5).astype(np.int64), in_size)
    count = np.clip(last - first, 0, max_taps)  # PyTorch caps the tap count the same way
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        j = np.arange(first[i], first[i] + count[i])
        w = _keys_cubic((j - center[i] + 0.5) / stretch, _A_ANTIALIAS)
        total = w.sum()
        matrix[i, j] = w / total if total != 0 else w
    return matrix


def bicubic_matrix(
    in_size: int, out_size: int, *, scale_factor: float | None = None, antialias: bool = False
) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with ``resized = M @ signal`` along one axis."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got in_size={in_size}, out_size={out_size}")
    scale = _source_scale(in_size, out_size, scale_factor)
    if antialias:
        return _antialias_weights(in_size, out_size, scale)
    return _plain_weights(in_size, out_size, scale)


def resize_bicubic(
    x: jax.Array,
    size: tuple[int, int],
    *,
    scale_factors: Sequence[float] | None = None,
    antialias: bool = False,
) -> jax.Array:
    """Resizes the two spatial axes of ``x`` (..., H, W, C) like PyTorch's bicubic interpolate.

    ``size`` is the output (h, w). Pass ``scale_factors`` too to reproduce a PyTorch call made
    with ``scale_factor=`` (the source coordinates then follow the factors, not the size ratio).
    The contraction runs in float32 at full precision whatever the input dtype.
    """
    if x.ndim < 3:
        raise ValueError(f"expected (..., H, W, C), got shape {x.shape}")
    (in_h, in_w), (out_h, out_w) = x.shape[-3:-1], size
    sh, sw = scale_factors if scale_factors is not None else (None, None)
    rows = jnp.asarray(bicubic_matrix(in_h, out_h, scale_factor=sh, antialias=antialias), jnp.float32)
    cols = jnp.asarray(bicubic_matrix(in_w, out_w, scale_factor=sw, antialias=antialias), jnp.float32)
    out = jnp.einsum(
        "hH,wW,...HWc->...hwc", rows, cols, x.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST
    )
    return out.astype(x.dtype)
