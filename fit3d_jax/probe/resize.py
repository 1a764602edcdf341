"""Bilinear resizing exactly as PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)``
(what mmseg and the DINOv2 heads use), written as two small matrices: the heads resize with
static shapes, and sliding-window inference builds the matrices on the host for each image's true
size inside zero-padded, bucketed shapes, so one compiled function serves many image sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def bilinear_weights(out_size: int, in_size: int, padded_out: int | None = None, padded_in: int | None = None) -> np.ndarray:
    """(padded_out, padded_in) float32 matrix M with out = M @ in along one axis; rows and columns
    beyond the true sizes are zero."""
    matrix = np.zeros((padded_out or out_size, padded_in or in_size), np.float32)
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = (src - low).astype(np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def apply_weights(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, rows.shape[0], cols.shape[0], C)."""
    return jnp.einsum("yh,bhwc,xw->byxc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B, *size, C), torch-bilinear (align_corners=False, no antialias)."""
    height, width = x.shape[1:3]
    if (height, width) == tuple(size):
        return x
    return apply_weights(x, jnp.asarray(bilinear_weights(size[0], height)), jnp.asarray(bilinear_weights(size[1], width)))
