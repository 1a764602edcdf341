"""Bilinear resizing exactly as PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)``
(what mmseg and the DINOv2 heads use, and FiT3D's upsampling of its stage I targets). Along each
axis an output sample is two taps of the input (``bilinear_taps``). Static shapes resize as
gathers of those taps, with the transposed taps as the backward pass (no matrices: a 37 -> 512
axis would multiply mostly zeros, the probe's training loss resizes 150 class maps per pixel,
and stage I's loss reads its upsampled targets inside one fusion). Sliding-window inference
builds the same taps as host matrices (``bilinear_weights``) for each image's true size inside
zero-padded, bucketed shapes, so one compiled function serves many image sizes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=256)
def bilinear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """((out_size, 2) int32 input indices, (out_size, 2) float32 weights) of each output sample."""
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = (src - low).astype(np.float32)
    return np.stack([low, high], 1).astype(np.int32), np.stack([1.0 - frac, frac], 1).astype(np.float32)


def bilinear_weights(out_size: int, in_size: int, padded_out: int | None = None, padded_in: int | None = None) -> np.ndarray:
    """(padded_out, padded_in) float32 matrix M with out = M @ in along one axis; rows and columns
    beyond the true sizes are zero."""
    matrix = np.zeros((padded_out or out_size, padded_in or in_size), np.float32)
    index, weight = bilinear_taps(out_size, in_size)
    for k in range(2):
        np.add.at(matrix, (np.arange(out_size), index[:, k]), weight[:, k])
    return matrix


@functools.lru_cache(maxsize=256)
def transposed_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The adjoint of ``bilinear_taps``: ((in_size, K) output indices, (in_size, K) weights) that
    each input sample feeds (the columns of ``bilinear_weights``), padded with weight 0 to the
    largest count K."""
    matrix = bilinear_weights(out_size, in_size)
    width = int((matrix != 0).sum(0).max())
    index = np.argsort(matrix == 0, axis=0, kind="stable")[:width]  # each column's nonzero rows first
    return index.T.astype(np.int32), np.take_along_axis(matrix, index, 0).T.astype(np.float32)


def apply_weights(x: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, rows.shape[0], cols.shape[0], C)."""
    return jnp.einsum("yh,bhwc,xw->byxc", rows, x, cols, precision=jax.lax.Precision.HIGHEST)


def _taps_along(x: jax.Array, taps: tuple[np.ndarray, np.ndarray], axis: int) -> jax.Array:
    """out[..., i, ...] = sum_k weight[i, k] * x[..., index[i, k], ...] along ``axis``."""
    index, weight = taps
    shape = [1] * x.ndim
    shape[axis] = index.shape[0]
    terms = [jnp.take(x, jnp.asarray(index[:, k]), axis=axis) * jnp.asarray(weight[:, k]).reshape(shape) for k in range(index.shape[1])]
    return functools.reduce(jnp.add, terms)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _resize_axis(x: jax.Array, size: int, source: int, axis: int, dtype) -> jax.Array:
    del dtype  # the input's: the backward casts to it
    return _taps_along(x, bilinear_taps(size, source), axis)


def _resize_axis_forward(x, size, source, axis, dtype):
    return _resize_axis(x, size, source, axis, dtype), None


def _resize_axis_backward(size, source, axis, dtype, _, g):
    return (_taps_along(g, transposed_taps(size, source), axis).astype(dtype),)


_resize_axis.defvjp(_resize_axis_forward, _resize_axis_backward)


def resize_axis(x: jax.Array, size: int, axis: int) -> jax.Array:
    """Torch-bilinear resizing of one axis of ``x`` to ``size`` samples."""
    if x.shape[axis] == size:
        return x
    return _resize_axis(x, size, x.shape[axis], axis, np.dtype(x.dtype))


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B, *size, C), torch-bilinear (align_corners=False, no antialias)."""
    return resize_axis(resize_axis(x, size[0], 1), size[1], 2)
