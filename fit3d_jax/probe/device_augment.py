"""The training augmentation on the accelerator: the draws of ``augment`` applied as jitted,
vectorised JAX to a batch of decoded images, so the host only decodes, pads and draws.

The host sends each sample's image and target padded to the batch's canvas (``segmentation_arrays``,
``depth_arrays``; or only its index, when the training set stays on the device) and the batch's
draws, for segmentation with the resizes' sampling tables (``segmentation_draw_inputs``,
``depth_draw_inputs``): OpenCV's tables are float64 and O(side), so they are made on the host
exactly as OpenCV makes them, in one numpy pass per batch; all O(pixels) work happens here, with
no host synchronisation (no data-dependent loops). Agreement with the numpy reference (``augment``, OpenCV 5):

* keep-ratio resize (bilinear image, nearest labels), crop, flip, RGB->HSV, the uint8 steps of
  the photometric distortion: bit-identical (OpenCV's fixed-point resize is reproduced in int32);
* cat_max_ratio: the same crop from the same candidates (exact integer class counts);
* HSV->RGB: OpenCV's vector path (which truncates); its scalar tail, the last ``width mod 4 x
  lanes`` pixels of a row, rounds instead: within 1 level there. On GPUs XLA fuses multiplies and
  adds (FMA), which moves 0.005 % of all colours by 1 level (H200, 2026-12-02);
* rotation (depth): OpenCV 5 samples in floating point; float32 here: within 1 level (image),
  the same source pixel but for coordinates within float32 rounding of a pixel edge (depth).
"""

from __future__ import annotations

import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.images import STATISTICS, normalize
from fit3d_jax.probe import augment
from fit3d_jax.probe.metrics import IGNORE_INDEX

CANVAS_STEP = 128  # batch canvases round up to this, so a dataset of many sizes compiles few programs
COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS


# ---------------------------------------------------------------------------------- host side


def canvas_for(shapes: list[tuple[int, int]], fixed: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """The (height, width) every sample of a batch is padded to: ``fixed``, or the largest shape
    rounded up to CANVAS_STEP."""
    if any(fixed):
        return tuple(fixed)
    return tuple(int(math.ceil(max(s[k] for s in shapes) / CANVAS_STEP) * CANVAS_STEP) for k in (0, 1))


def table_length(a: augment.Augment) -> int:
    """Entries of a resize table: the longest resized side plus a crop, so any window slices in range."""
    return int(max(a.scale) * a.ratio_range[1]) + 1 + max(a.crop)


def linear_tables(in_sizes: np.ndarray, out_sizes: np.ndarray, length: int, *, clamp: bool) -> np.ndarray:
    """(B, 4, length) int32: OpenCV's bilinear taps (s0, s1) and fixed-point weights (w0, w1) per
    output index of each sample's resize from in_sizes[b] to out_sizes[b] (zeros past it), as
    cv2.resize computes them (``clamp``: the horizontal rule, which moves out-of-range taps to the
    border with weight 0; rows clamp only their taps). One numpy pass for the whole batch, over the
    batch's longest output only (the rest stays zero)."""
    size = np.asarray(in_sizes, np.int64)[:, None]
    out = np.asarray(out_sizes, np.int64)[:, None]
    tables = np.zeros((len(size), 4, length), np.int32)
    n = int(min(length, out.max(initial=0)))
    f = ((np.arange(n) + 0.5) * (size / out) - 0.5).astype(np.float32)
    s = np.floor(f)  # float32 holds these integers exactly: f - s is cv2's float32 fraction
    f -= s
    s = s.astype(np.int32)
    last = (size - 1).astype(np.int32)
    if clamp:
        low, high = s < 0, s >= last
        f[low | high] = 0
        s = np.where(high, last, np.where(low, 0, s))
    # int32 throughout, written in place: the batch's (B, 4, length) tables are megabytes
    one, valid, window = np.float32(1 << COEF_BITS), np.arange(n) < out, tables[..., :n]
    np.copyto(window[:, 0], np.clip(s, 0, last), where=valid)
    np.copyto(window[:, 1], np.clip(s + 1, 0, last), where=valid)
    np.copyto(window[:, 2], np.rint((np.float32(1) - f) * one), where=valid, casting="unsafe")
    np.copyto(window[:, 3], np.rint(f * one), where=valid, casting="unsafe")
    return tables


def nearest_tables(in_sizes: np.ndarray, out_sizes: np.ndarray, length: int) -> np.ndarray:
    """(B, length) int32: cv2's INTER_NEAREST source index floor(x * (1 / (out / in))) (zeros past out)."""
    size = np.asarray(in_sizes, np.int64)[:, None]
    out = np.asarray(out_sizes, np.int64)[:, None]
    tables = np.zeros((len(size), length), np.int32)
    k = np.arange(int(min(length, out.max(initial=0))))
    source = np.minimum(np.floor(k * (1.0 / (out / size))), size - 1)
    np.copyto(tables[:, : len(k)], source, where=k < out, casting="unsafe")
    return tables


def _check_pair(image: np.ndarray, target: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or target.shape != image.shape[:2]:
        raise ValueError(f"{what}: image {image.shape} {image.dtype} and target {target.shape} do not pair: "
                         "the image must be uint8 (H, W, 3) and the target (H, W)")


def _padded(x: np.ndarray, canvas: tuple[int, int], fill, what: str) -> np.ndarray:
    if x.shape[0] > canvas[0] or x.shape[1] > canvas[1]:
        raise ValueError(f"{what}: {x.shape[:2]} is larger than the canvas {canvas} (config.augment.canvas)")
    out = np.full((*canvas, *x.shape[2:]), fill, x.dtype)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def segmentation_arrays(image: np.ndarray, labels: np.ndarray, canvas: tuple[int, int], what: str = "image") -> dict:
    """One sample's padded image and labels (uint8: classes < IGNORE_INDEX = 255), checked."""
    _check_pair(image, labels, what)
    if labels.size and (labels.min() < 0 or labels.max() > IGNORE_INDEX):
        raise ValueError(f"{what}: labels span [{labels.min()}, {labels.max()}]; classes must lie in [0, {IGNORE_INDEX}) "
                         f"with {IGNORE_INDEX} ignored")
    return {"source": _padded(image, canvas, 0, what), "labels": _padded(labels.astype(np.uint8), canvas, IGNORE_INDEX, what)}


def depth_arrays(image: np.ndarray, depth: np.ndarray, canvas: tuple[int, int], what: str = "image") -> dict:
    """One sample's padded image and float32 depth, checked."""
    _check_pair(image, depth, what)
    return {"source": _padded(image, canvas, 0, what), "depth": _padded(depth.astype(np.float32), canvas, 0.0, what)}


def segmentation_draw_inputs(shapes: np.ndarray, draws: augment.SegmentationDraws, a: augment.Augment) -> dict:
    """A batch's draws for images of (H, W) = ``shapes`` (B, 2) as device inputs (B, ...): the
    resizes' OpenCV tables, the crop candidates, the flips and the photometric draws."""
    shapes, length, sizes = np.asarray(shapes, np.int64).reshape(-1, 2), table_length(a), np.asarray(draws.size).reshape(-1, 2)
    return {
        "rows": linear_tables(shapes[:, 0], sizes[:, 0], length, clamp=False),
        "cols": linear_tables(shapes[:, 1], sizes[:, 1], length, clamp=True),
        "nearest_rows": nearest_tables(shapes[:, 0], sizes[:, 0], length),
        "nearest_cols": nearest_tables(shapes[:, 1], sizes[:, 1], length),
        "size": sizes.astype(np.int32),
        "origins": np.asarray(draws.origins, np.int32),
        "flip": np.asarray(draws.flip, np.int32),
        "photometric": np.asarray(draws.photometric, np.float32),
    }


def depth_draw_inputs(shapes: np.ndarray, draws: augment.DepthDraws) -> dict:
    """A batch's draws for depth maps of (H, W) = ``shapes`` (B, 2) as device inputs (B, ...):
    warpAffine's inverse maps (dst -> src) as float32, the flips, the crop origins and the colour
    draws."""
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    inverse = np.zeros((len(shapes), 2, 3))
    for k in np.flatnonzero(draws.rotate):  # only the rotated rows: OpenCV's float64 matrices, as the reference
        inverse[k] = cv2.invertAffineTransform(augment.rotation_matrix(tuple(shapes[k]), float(draws.angle[k])))
    return {
        "shape": shapes.astype(np.int32),
        "rotate": np.asarray(draws.rotate, np.int32),
        "inverse": inverse.astype(np.float32),
        "flip": np.asarray(draws.flip, np.int32),
        "origin": np.asarray(draws.origin, np.int32),
        "colour": np.asarray(draws.colour, np.float32),
    }


# -------------------------------------------------------------------------------- device side


def _resize_window(source: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
    """OpenCV's fixed-point bilinear resize at the rows and cols of a window: source uint8 (H, W, 3),
    rows/cols (4, n) taps and weights -> uint8 (n_rows, n_cols, 3). The vertical pass is OpenCV's
    vector form (each row scaled by 2^-4, the product by 2^-16, the sum rounded by 2^-2)."""
    pixels = source.astype(jnp.int32)

    def horizontal(r):  # (n_rows, W, 3) -> (n_rows, n_cols, 3), scale 2^11
        return r[:, cols[0]] * cols[2][None, :, None] + r[:, cols[1]] * cols[3][None, :, None]

    top, bottom = horizontal(pixels[rows[0]]), horizontal(pixels[rows[1]])
    b0, b1 = rows[2][:, None, None], rows[3][:, None, None]
    out = (((b0 * (top >> 4)) >> 16) + ((b1 * (bottom >> 4)) >> 16) + 2) >> 2
    return jnp.clip(out, 0, 255).astype(jnp.uint8)


def _majority(labels: jax.Array) -> jax.Array:
    """The Boyer-Moore majority vote of the labelled pixels (IGNORE_INDEX does not vote) as one
    reduction: the class that holds more than half of them, if one does (else any class, or
    IGNORE_INDEX). Pairs of different votes cancel, which keeps a strict majority in any order."""
    def combine(x, y):
        (a, count_a), (b, count_b) = x, y
        same = a == b
        return jnp.where(same | (count_a >= count_b), a, b), jnp.where(same, count_a + count_b, jnp.abs(count_a - count_b))

    votes = (labels != IGNORE_INDEX).astype(jnp.int32)
    candidate, _ = jax.lax.reduce((labels, votes), (jnp.int32(IGNORE_INDEX), jnp.int32(0)), combine, (0,))
    return candidate


def _crop_passes(labels: jax.Array, nearest_rows: jax.Array, nearest_cols: jax.Array, origin: jax.Array, hw: jax.Array,
                 crop: tuple[int, int], num_classes: int, cat_max_ratio: float) -> jax.Array:
    """augment.crop_passes on the window at ``origin`` of the nearest-resized labels (gathered from
    the source; IGNORE_INDEX = 255 is no class), with exact integer counts. A ratio above 1/2 can
    only be reached by a strict majority, so only the majority vote's class is counted (two
    reductions instead of one per class); lower ratios count every class."""
    rows = jax.lax.dynamic_slice(nearest_rows, (origin[0],), (crop[0],))
    cols = jax.lax.dynamic_slice(nearest_cols, (origin[1],), (crop[1],))
    window = jnp.where(_inside(hw, crop), labels[rows[:, None], cols[None, :]], IGNORE_INDEX).reshape(-1).astype(jnp.int32)
    labelled = window != IGNORE_INDEX
    total = jnp.sum(labelled, dtype=jnp.int32)
    if cat_max_ratio > 0.5:
        largest = jnp.sum(labelled & (window == _majority(window)), dtype=jnp.int32)  # the largest class, where it matters
        several = largest < total
    else:
        counts = jnp.sum(jnp.arange(num_classes)[:, None] == window[None, :], axis=1, dtype=jnp.int32)
        largest, several = counts.max(), jnp.sum(counts > 0) > 1
    # max / sum < ratio as max < ratio * sum: exact in float32 for ratios like 0.75 (few mantissa bits)
    return several & (largest.astype(jnp.float32) < cat_max_ratio * total.astype(jnp.float32))


def choose_crops(batch: dict, window: jax.Array, a: augment.Augment, num_classes: int) -> jax.Array:
    """(B,) the candidate each sample crops (augment.chosen_crop): every checked candidate is
    tested at once and the first to pass is taken. A loop that stops at the first pass would
    be cheaper on average, but a data-dependent loop makes the host wait for the device each
    iteration (XLA reads the loop condition back), which stalls the step pipeline."""
    b = window.shape[0]
    if a.cat_max_ratio >= 1:
        return jnp.zeros(b, jnp.int32)
    check = lambda *x: _crop_passes(*x, tuple(a.crop), num_classes, a.cat_max_ratio)
    over_candidates = jax.vmap(check, in_axes=(None, None, None, 0, None))
    ok = jax.vmap(over_candidates)(batch["labels"], batch["nearest_rows"], batch["nearest_cols"],
                                   batch["origins"][:, : augment.CROP_TRIES], window)  # (B, CROP_TRIES)
    return jnp.where(jnp.any(ok, axis=1), jnp.argmax(ok, axis=1), augment.CROP_TRIES).astype(jnp.int32)


# OpenCV's RGB2HSV_b division tables (hsv_shift 12, H range 180), rounded as cvRound.
_HSV_SHIFT = 12
_I = np.maximum(np.arange(256), 1)
_SDIV = np.where(np.arange(256) > 0, np.rint((255 << _HSV_SHIFT) / _I), 0).astype(np.int32)
_HDIV = np.where(np.arange(256) > 0, np.rint((180 << _HSV_SHIFT) / (6.0 * _I)), 0).astype(np.int32)


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
    """cv2.COLOR_RGB2HSV on uint8 (..., 3) -> int32 (..., 3), H in [0, 180): OpenCV's integer form."""
    r, g, b = (rgb[..., k].astype(jnp.int32) for k in range(3))
    v = jnp.maximum(jnp.maximum(r, g), b)
    diff = v - jnp.minimum(jnp.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * jnp.asarray(_SDIV)[v] + half) >> _HSV_SHIFT
    h = jnp.where(v == r, g - b, jnp.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * jnp.asarray(_HDIV)[diff] + half) >> _HSV_SHIFT
    return jnp.stack([jnp.where(h < 0, h + 180, h), s, v], -1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """cv2.COLOR_HSV2RGB on uint8-range int (..., 3) -> uint8: OpenCV's vector path (float32, truncating)."""
    f32 = jnp.float32
    h = hsv[..., 0].astype(f32) * (f32(6.0) / f32(180))
    s, v = hsv[..., 1].astype(f32) * f32(1 / 255), hsv[..., 2].astype(f32) * f32(1 / 255)
    pre = jnp.trunc(h)
    h = h - pre
    tab = (v, v * (1 - s), v * (1 - s * h), v * (1 - s * (1 - h)))
    sector = pre - jnp.trunc(pre * f32(1 / 6)) * 6
    # (b, g, r) per sector, OpenCV's sector_data
    order = ((1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0))
    channel = lambda c: jnp.select([sector == k for k in range(5)], [tab[order[k][c]] for k in range(5)], tab[order[5][c]])
    b, g, r = (channel(c) for c in range(3))
    return jnp.clip(jnp.trunc(jnp.stack([r, g, b], -1) * f32(255)), 0, 255).astype(jnp.uint8)


def photometric(image: jax.Array, p: jax.Array) -> jax.Array:
    """augment.photometric_distortion of one uint8 (h, w, 3) image with its draws (9,)."""
    convert = lambda x, f: jnp.clip(f(x.astype(jnp.float32)), 0, 255).astype(jnp.uint8)
    when = lambda flag, new, old: jnp.where(flag > 0, new, old)
    image = when(p[0], convert(image, lambda x: x + p[1]), image)
    contrast = lambda x: when(p[3], convert(x, lambda v: v * p[4]), x)
    image = when(p[2], contrast(image), image)
    hsv = rgb_to_hsv(image)
    saturated = hsv.at[..., 1].set(convert(hsv[..., 1], lambda v: v * p[6]).astype(jnp.int32))
    image = when(p[5], hsv_to_rgb(saturated), image)
    hsv = rgb_to_hsv(image)
    image = when(p[7], hsv_to_rgb(hsv.at[..., 0].set((hsv[..., 0] + p[8].astype(jnp.int32)) % 180)), image)
    return when(p[2], image, contrast(image))


def _inside(hw: jax.Array, shape: tuple[int, int]) -> jax.Array:
    return (jnp.arange(shape[0])[:, None] < hw[0]) & (jnp.arange(shape[1])[None, :] < hw[1])


def segmentation_batch(batch: dict, a: augment.Augment, num_classes: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A batch of segmentation arrays and draw inputs -> uint8 crops (B, *crop, 3) (zero outside each sample's
    crop), their sizes (B, 2), int32 labels (B, *crop) (IGNORE_INDEX outside)."""
    crop = tuple(a.crop)
    window = jnp.minimum(batch["size"], jnp.asarray(crop, jnp.int32))
    chosen = choose_crops(batch, window, a, num_classes)
    origin = jnp.take_along_axis(batch["origins"], chosen[:, None, None], axis=1)[:, 0]

    def one(source, labels, rows, cols, nearest_rows, nearest_cols, origin, hw, flip, p):
        i, j = jnp.arange(crop[0]), jnp.arange(crop[1])
        r = jnp.minimum(origin[0] + i, rows.shape[1] - 1)
        c = jnp.minimum(origin[1] + jnp.where(flip > 0, hw[1] - 1 - j, j), cols.shape[1] - 1)
        c = jnp.where(j < hw[1], c, origin[1])
        image = photometric(_resize_window(source, rows[:, r], cols[:, c]), p)
        target = labels[nearest_rows[r][:, None], nearest_cols[c][None, :]].astype(jnp.int32)
        inside = _inside(hw, crop)
        return jnp.where(inside[..., None], image, 0), jnp.where(inside, target, IGNORE_INDEX)

    images, labels = jax.vmap(one)(batch["source"], batch["labels"], batch["rows"], batch["cols"], batch["nearest_rows"],
                                   batch["nearest_cols"], origin, window, batch["flip"], batch["photometric"])
    return images, window, labels


def _rotated_sample(source, depth, shape, inverse, y, x):
    """cv2.warpAffine at (y, x) of the destination: image bilinear, depth nearest, zero outside."""
    f32 = jnp.float32
    xf, yf = x.astype(f32), y.astype(f32)
    sx = inverse[0, 0] * xf + inverse[0, 1] * yf + inverse[0, 2]
    sy = inverse[1, 0] * xf + inverse[1, 1] * yf + inverse[1, 2]

    def tap(yy, xx):
        ok = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
        yy, xx = jnp.clip(yy, 0, source.shape[0] - 1), jnp.clip(xx, 0, source.shape[1] - 1)
        return ok, yy, xx

    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    ax, ay = (sx - x0)[..., None], (sy - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    value = 0.0
    for dy, dx, weight in ((0, 0, (1 - ay) * (1 - ax)), (0, 1, (1 - ay) * ax), (1, 0, ay * (1 - ax)), (1, 1, ay * ax)):
        ok, yy, xx = tap(y0 + dy, x0 + dx)
        value = value + jnp.where(ok[..., None], source[yy, xx].astype(f32), 0.0) * weight
    image = jnp.clip(jnp.round(value), 0, 255).astype(jnp.uint8)
    ok, yy, xx = tap(jnp.floor(sy + 0.5).astype(jnp.int32), jnp.floor(sx + 0.5).astype(jnp.int32))
    return image, jnp.where(ok, depth[yy, xx], 0.0)


def depth_batch(batch: dict, a: augment.Augment) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A batch of depth arrays and draw inputs -> uint8 crops (B, *crop, 3), sizes (B, 2), colour draws (B, 6),
    float32 depth (B, *crop) (0 outside)."""
    crop = tuple(a.crop)
    window = jnp.minimum(batch["shape"], jnp.asarray(crop, jnp.int32))

    def one(source, depth, shape, rotate, inverse, flip, origin, hw):
        i, j = jnp.arange(crop[0])[:, None], jnp.arange(crop[1])[None, :]
        y = jnp.broadcast_to(jnp.minimum(origin[0] + i, source.shape[0] - 1), crop)
        x = origin[1] + j
        x = jnp.broadcast_to(jnp.clip(jnp.where(flip > 0, shape[1] - 1 - x, x), 0, source.shape[1] - 1), crop)
        rotated, rotated_depth = _rotated_sample(source, depth, shape, inverse, y, x)
        image = jnp.where(rotate > 0, rotated, source[y, x])
        target = jnp.where(rotate > 0, rotated_depth, depth[y, x])
        inside = _inside(hw, crop)
        return jnp.where(inside[..., None], image, 0), jnp.where(inside, target, 0.0)

    images, depth = jax.vmap(one)(batch["source"], batch["depth"], batch["shape"], batch["rotate"], batch["inverse"],
                                  batch["flip"], batch["origin"], window)
    return images, window, batch["colour"], depth


def finish_batch(crops: jax.Array, sizes: jax.Array, colour: jax.Array, a: augment.Augment, statistics: str) -> jax.Array:
    """``augment.finish`` for a batch: crops uint8 (B, H, W, 3) with each sample's crop in its
    top-left (h, w) = ``sizes`` (B, 2), colour draws (B, 6) -> float32 (B, H, W, 3), zero outside the
    crops (the pipelines' padding). Float32 where the reference's ColorAug is float64: within 1e-5
    of it in normalised units; plain normalisation is ``normalize``, within float32 rounding once
    XLA compiles it into the model's program."""
    mean, std = (jnp.asarray(v) for v in STATISTICS[statistics])
    pixels = crops.astype(jnp.float32)
    applied, gamma, brightness = (colour[:, k, None, None, None] for k in range(3))
    colors = colour[:, None, None, 3:]
    if a.color_gamma == "raw":
        coloured = jnp.clip(pixels**gamma * brightness * colors, 0, 255)
    else:
        coloured = jnp.clip((pixels / 255) ** gamma * brightness * colors, 0, 1) * 255
    plain = normalize(crops, statistics)
    out = jnp.where(applied > 0, (coloured / 255 - mean) / std, plain)
    inside = jax.vmap(lambda hw: _inside(hw, crops.shape[1:3]))(sizes)
    return jnp.where(inside[..., None], out, 0.0)
