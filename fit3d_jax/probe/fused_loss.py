"""The segmentation training loss with its resize fused in: softmax cross-entropy of the head's
token-grid logits, bilinearly resized to the labels, without writing full-resolution class maps.

At ADE20K's 150 classes the (16, 512, 512, 150) maps of the plain loss (resize, then
``losses.segmentation_cross_entropy``) cost as much memory traffic as the frozen ViT-S forward.
Here the resize along the height stays in XLA (two gathered taps: (B, H, w, C), w ~ W / 14); the
FFI kernel ``fit3d_cross_entropy`` (ffi_kernels/src/*/cross_entropy.*) resizes each row along the
width, takes the softmax and writes each row's summed loss and the gradient of the row map, all
in one pass (the loss is only ever minimised). ``reference_cross_entropy``, the plain loss, is
what the tests hold it to, and what runs where no kernel library exists (TPUs).
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from fit3d_jax import kernels
from fit3d_jax.probe import losses
from fit3d_jax.probe.heads import Placement, to_input_size
from fit3d_jax.probe.metrics import IGNORE_INDEX
from fit3d_jax.resize import bilinear_taps, resize_axis

PLATFORMS = {"cpu": "cpu", "gpu": "cuda"}  # JAX backend -> kernel library
MAX_CLASSES = 256  # the CUDA kernel holds a pixel's scores in registers; beyond, the plain loss


def available() -> bool:
    """Whether this backend has the kernel (the CPU library always; the CUDA one once built)."""
    suffix = PLATFORMS.get(jax.default_backend())
    return suffix is not None and kernels.available(suffix)


def reference_cross_entropy(logits: jax.Array, labels: jax.Array, placement: Placement, resize: str = "stretch",
                            all_pixels: bool = True) -> jax.Array:
    """The plain loss: the (B, h, w, C) grid logits resized to the (B, H, W) labels, then
    ``losses.segmentation_cross_entropy``."""
    return losses.segmentation_cross_entropy(to_input_size(logits, placement, resize), labels, all_pixels)


@functools.lru_cache(maxsize=64)
def width_taps(size: int, source: int, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """The kernel's tap operands for output columns [start, stop) of a source -> size resize:
    each column's two taps (index, weight), and the segments: where the columns of each low tap
    begin (ffi_kernels/include/fit3d/cross_entropy.h)."""
    index, weight = (t[start:stop] for t in bilinear_taps(size, source))
    segments = np.searchsorted(index[:, 0], np.arange(source + 1)).astype(np.int32)
    return index, weight, segments


def _kernel(rows: jax.Array, labels: jax.Array, taps: tuple[np.ndarray, ...]) -> tuple[jax.Array, jax.Array]:
    out = (jax.ShapeDtypeStruct(labels.shape[:-1], jnp.float32), jax.ShapeDtypeStruct(rows.shape, jnp.float32))
    return tuple(kernels.call("cross_entropy", out, rows, labels, *map(jnp.asarray, taps), ignore_index=np.int32(IGNORE_INDEX)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _summed_nll(rows: jax.Array, labels: jax.Array, window: tuple[int, int, int, int], mesh: Mesh | None) -> jax.Array:
    return _summed_nll_forward(rows, labels, window, mesh)[0]


def _summed_nll_forward(rows, labels, window, mesh):
    call = functools.partial(_kernel, taps=width_taps(*window))
    if mesh is not None:  # the kernel sees one device's rows; XLA would gather the batch for it
        batched = PartitionSpec(mesh.axis_names)
        call = jax.shard_map(call, mesh=mesh, in_specs=(batched, batched), out_specs=(batched, batched))
    nll, grad = call(rows, labels)
    return jnp.sum(nll), grad


def _summed_nll_backward(window, mesh, grad, g):
    return g * grad, None


_summed_nll.defvjp(_summed_nll_forward, _summed_nll_backward)


def resized_cross_entropy(logits: jax.Array, labels: jax.Array, placement: Placement, resize: str = "stretch",
                          all_pixels: bool = True, mesh: Mesh | None = None) -> jax.Array:
    """``reference_cross_entropy`` through the kernel (within float32 rounding): (B, h, w, C)
    grid logits, (B, H, W) labels with IGNORE_INDEX for none. ``mesh``: the batch is sharded over
    all its axes (the kernel then runs on each device's rows). Over MAX_CLASSES, the plain loss."""
    chex.assert_rank(logits, 4)
    chex.assert_shape(labels, (logits.shape[0], placement.height, placement.width))
    if logits.shape[-1] > MAX_CLASSES:
        return reference_cross_entropy(logits, labels, placement, resize, all_pixels)
    (height, width), (top, left) = placement.output_window(resize)
    rows = resize_axis(logits, height, 1)[:, top : top + placement.height]
    window = (width, logits.shape[2], left, left + placement.width)
    total = _summed_nll(rows.astype(jnp.float32), labels.astype(jnp.int32), window, mesh)
    count = labels.size if all_pixels else jnp.maximum(jnp.sum(labels != IGNORE_INDEX), 1)
    return total / count
