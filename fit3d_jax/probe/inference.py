"""Dense prediction of whole test images: sliding windows (or the whole image as one window),
run through the frozen backbones and the head, averaged where windows overlap, and resized
bilinearly to the label size, all on the device.

Shapes vary from image to image (ADE20K), so the canvas, the label and the window count are
padded up to buckets and the exact bilinear resize is passed in as host-built matrices
(``resize.bilinear_weights``): a handful of compiled functions serve a whole split.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.images import normalize
from fit3d_jax.models.dinov2 import FORWARD_COMPILER_OPTIONS
from fit3d_jax.probe.assembly import models_for
from fit3d_jax.probe.heads import Placement
from fit3d_jax.resize import apply_weights, bilinear_weights

BUCKET = 64


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def window_origins(height: int, width: int, crop: tuple[int, int], stride: tuple[int, int]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """mmseg's slide_inference grid: origins of windows of size (min(crop_h, H), min(crop_w, W))."""
    wh, ww = min(crop[0], height), min(crop[1], width)
    rows = max(height - crop[0] + stride[0] - 1, 0) // stride[0] + 1
    cols = max(width - crop[1] + stride[1] - 1, 0) // stride[1] + 1
    origins = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride[0] + wh, height), min(c * stride[1] + ww, width)
            origins.append((max(y2 - wh, 0), max(x2 - ww, 0)))
    return origins, (wh, ww)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One test image laid out for ``DensePredictor.predict``."""

    windows: np.ndarray  # (N, wh, ww, 3): uint8 (normalised on the device) or normalised float32
    origins: np.ndarray  # (N, 2) int32
    valid: np.ndarray  # (N,) float32: padding windows are 0
    rows: np.ndarray  # (label_h bucket, canvas_h bucket) resize matrix
    cols: np.ndarray
    canvas: tuple[int, int]  # bucketed canvas size
    label_size: tuple[int, int]  # true label size


def prepare(image: np.ndarray, label_size: tuple[int, int], crop: tuple[int, int] | None, stride: tuple[int, int] | None) -> Prepared:
    """``image``: (H, W, 3) uint8 or normalised, at inference resolution; ``crop`` None = whole image."""
    height, width = image.shape[:2]
    crop = crop or (height, width)
    stride = stride or crop
    origins, (wh, ww) = window_origins(height, width, crop, stride)
    n = 1 << (len(origins) - 1).bit_length()
    windows = np.zeros((n, wh, ww, 3), image.dtype if image.dtype == np.uint8 else np.float32)
    for k, (y, x) in enumerate(origins):
        windows[k] = image[y : y + wh, x : x + ww]
    padded_origins = np.zeros((n, 2), np.int32)
    padded_origins[: len(origins)] = origins
    canvas = (round_up(height, BUCKET), round_up(width, BUCKET))
    label_bucket = (round_up(label_size[0], BUCKET), round_up(label_size[1], BUCKET))
    return Prepared(
        windows, padded_origins, (np.arange(n) < len(origins)).astype(np.float32),
        bilinear_weights(label_size[0], height, label_bucket[0], canvas[0]),
        bilinear_weights(label_size[1], width, label_bucket[1], canvas[1]),
        canvas, tuple(label_size),
    )


def pad_to(array: np.ndarray, shape: tuple[int, int], fill) -> np.ndarray:
    return np.pad(array, ((0, shape[0] - array.shape[0]), (0, shape[1] - array.shape[1])), constant_values=fill)


class DensePredictor:
    """``predict(backbone_params, head_variables, prepared)`` -> (label_h bucket, label_w bucket, K)
    map: class scores (segmentation) or depth (K = 1, clamped to the head's range). With ``flip``,
    each window is also predicted mirrored and mirrored back, and the two maps are averaged (each
    clamped first, as the depth toolbox's aug_test; in whole-image mode this is its exact flip test).

    ``backbones`` and ``head`` may be equal-length sequences (the heads of one run, one task):
    ``predict_all`` then runs the frozen models once per window batch and returns every head's map.
    Each model is its own jitted program, apart from the heads' (as in training), so a head's map
    is bit-identical whichever other heads share the pass. Predictors of equal configuration are
    equal, so a new one (each evaluation builds one) reuses the traced and compiled programs."""

    def __init__(self, backbones, head, patch_size: int, flip: bool = False):
        self.several = isinstance(head, (list, tuple))
        self.backbones = tuple(backbones) if self.several else (backbones,)
        self.heads = tuple(head) if self.several else (head,)
        self.patch_size, self.flip = patch_size, flip
        self.models = models_for([b.assembly for b in self.backbones])
        self._depth = hasattr(self.heads[0], "num_bins")

    def _key(self) -> tuple:  # all the jitted methods read of self
        return self.several, self.backbones, self.heads, self.patch_size, self.flip

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other) -> bool:
        return isinstance(other, DensePredictor) and self._key() == other._key()

    @functools.partial(jax.jit, static_argnums=0, compiler_options=FORWARD_COMPILER_OPTIONS)
    def _model(self, params, windows):
        if windows.dtype == jnp.uint8:
            windows = normalize(windows, self.backbones[0].model.config.input_statistics)
        placement = Placement.for_size(*windows.shape[1:3], self.patch_size)
        inputs = jnp.concatenate([windows, windows[:, :, ::-1]]) if self.flip else windows
        return self.backbones[0].run(params, placement.pad(inputs))

    @functools.partial(jax.jit, static_argnums=(0, 8))
    def _heads(self, outputs, head_variables, windows, origins, valid, rows, cols, canvas):
        n, wh, ww = windows.shape[:3]
        placement = Placement.for_size(wh, ww, self.patch_size)
        return [self._head_map(b.assemble(outputs), head, variables, placement, n, wh, ww, origins, valid, rows, cols, canvas)
                for b, head, variables in zip(self.backbones, self.heads, head_variables)]

    def _head_map(self, features, head, head_variables, placement, n, wh, ww, origins, valid, rows, cols, canvas):
        out = head.apply(head_variables, *features, placement, train=False)
        out = out[0][..., None] if self._depth else out
        passes = [out[:n], out[n:, :, ::-1]] if self.flip else [out]

        def merge(out):
            """The windows' outputs, averaged where they overlap, on the canvas."""
            out = out * valid[:, None, None, None]

            def add(k, acc):
                scores, counts = acc
                y, x = origins[k, 0], origins[k, 1]
                window = jax.lax.dynamic_slice(scores, (y, x, 0), out.shape[1:])
                scores = jax.lax.dynamic_update_slice(scores, window + out[k], (y, x, 0))
                count = jax.lax.dynamic_slice(counts, (y, x, 0), (wh, ww, 1))
                counts = jax.lax.dynamic_update_slice(counts, count + valid[k], (y, x, 0))
                return scores, counts

            zeros = (jnp.zeros((*canvas, out.shape[-1]), jnp.float32), jnp.zeros((*canvas, 1), jnp.float32))
            scores, counts = jax.lax.fori_loop(0, n, add, zeros)
            mean = scores / jnp.maximum(counts, 1.0)
            return jnp.clip(mean, head.min_depth, head.max_depth) if self._depth else mean

        mean = sum(merge(o) for o in passes) / len(passes)
        return apply_weights(mean[None], rows, cols)[0]

    def predict_all(self, backbone_params, head_variables: list, p: Prepared) -> list[jax.Array]:
        outputs = {m: self._model(backbone_params[m], p.windows) for m in self.models}
        return self._heads(outputs, list(head_variables), p.windows, p.origins, p.valid, p.rows, p.cols, p.canvas)

    def predict(self, backbone_params, head_variables, p: Prepared) -> jax.Array:
        """The one head's map (a predictor built with single backbones and head)."""
        return self.predict_all(backbone_params, [head_variables], p)[0]
