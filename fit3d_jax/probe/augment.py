"""Training augmentation as the protocol's pipelines do it: the random draws and the numpy reference.

Segmentation (mmseg's ADE20K / VOC pipeline): keep-ratio resize to ``scale`` x U(ratio_range),
random crop with ``cat_max_ratio`` (up to 10 tries for a crop no single class dominates),
horizontal flip, photometric distortion (brightness, contrast before or after, saturation, hue),
normalise, pad to the crop (image 0, label IGNORE_INDEX).

Depth (FiT3D's depth-toolbox pipeline, after the dataset's own crop: NYUCrop, KBCrop): random
rotation (image bilinear, depth nearest, zero borders), horizontal flip, random crop, colour
augmentation (gamma, brightness, per-channel colour), normalise, pad to the crop (depth 0 = invalid).

Every random decision of a batch is drawn first, as a fixed number of uniforms per sample from a
numpy Generator the caller seeds per (seed, step) (``segmentation_draws``, ``depth_draws``: one
vectorised call per batch, since per-sample Python draws cost the host more than the rest of a
batch), so a resumed run draws the same batches and a row's draws do not depend on how many
processes share the batch. This module is the numpy reference that applies one sample's draws
with OpenCV (``segmentation_crop``, ``depth_crop``: the uint8 crop; ``finish``: ColorAug and
normalisation; ``segmentation_train``, ``depth_train``: the whole pipeline from a Generator).
``device_augment`` applies the same draws as jitted JAX on the accelerator, which is what training
runs by default.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import cv2
import numpy as np

from fit3d_jax.images import STATISTICS, normalize
from fit3d_jax.probe.metrics import IGNORE_INDEX


@dataclasses.dataclass(frozen=True)
class Augment:
    crop: tuple[int, int] = (512, 512)  # (height, width) of training inputs
    flip_prob: float = 0.5
    # segmentation
    scale: tuple[int, int] = (2048, 512)  # keep-ratio resize target (long, short), also at test time
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    photometric: bool = True
    # depth
    rotate_prob: float = 0.5
    rotate_degrees: float = 2.5
    color_prob: float = 0.5
    gamma_range: tuple[float, float] = (0.9, 1.1)
    brightness_range: tuple[float, float] = (0.75, 1.25)
    color_range: tuple[float, float] = (0.9, 1.1)
    # raw: FiT3D's ColorAug, the gamma power of the 0-255 values (a brightening of up to 1.7x at gamma
    # 1.1), kept as floats; unit: the gamma of [0, 1] values, as intended
    color_gamma: str = "raw"
    # where the pipeline runs: on the accelerator (device_augment) or the numpy reference on the host
    on_device: bool = True
    canvas: tuple[int, int] = (0, 0)  # (h, w) every source image is padded to on the device; (0, 0) = per batch


def keep_ratio_sizes(shapes: np.ndarray, long, short) -> np.ndarray:
    """mmcv's keep-ratio rescale of (B, 2) shapes, each to its (long, short) scale (scalars or (B,)):
    the largest size with long side <= long and short side <= short."""
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    factor = np.minimum(long / shapes.max(1), short / shapes.min(1))
    return (shapes * factor[:, None] + 0.5).astype(np.int64)


def keep_ratio_size(height: int, width: int, scale: tuple[float, float]) -> tuple[int, int]:
    """keep_ratio_sizes of one shape to ``scale`` (either order)."""
    return tuple(int(v) for v in keep_ratio_sizes([(height, width)], max(scale), min(scale))[0])


def resize_pair(image: np.ndarray, target: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear, target (labels or depth) nearest."""
    if size == image.shape[:2]:
        return image, target
    return (cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR),
            cv2.resize(target, size[::-1], interpolation=cv2.INTER_NEAREST))


def pad(image: np.ndarray, target: np.ndarray, crop: tuple[int, int], fill) -> tuple[np.ndarray, np.ndarray]:
    pad = ((0, crop[0] - image.shape[0]), (0, crop[1] - image.shape[1]))
    return np.pad(image, pad + ((0, 0),)), np.pad(target, pad, constant_values=fill)


# ------------------------------------------------------------------------------------ the draws
# A batch's draws are made from uniforms, a fixed number per sample, so row r of a batch takes the
# same values whatever the batch's other rows are (their shapes included) and wherever it is
# computed; the numpy pipelines below and the device pipelines (device_augment) both apply them.

CROP_TRIES = 10  # mmseg's RandomCrop: up to 10 crops are checked against cat_max_ratio
# Photometric draws, float32: brightness (applied, delta), contrast first (0/1), contrast
# (applied, factor), saturation (applied, factor), hue (applied, delta).
PHOTOMETRIC = ("brightness", "beta", "contrast_first", "contrast", "alpha", "saturation", "saturation_alpha", "hue", "hue_delta")
NO_PHOTOMETRIC = np.array([0, 0, 0, 0, 1, 0, 1, 0, 0], np.float32)


def _uniforms(rng: np.random.Generator, rows: int, per_row: int, skip: int) -> np.ndarray:
    """(rows, per_row) uniforms [0, 1): rows skip .. skip + rows - 1 of the Generator's row-major stream."""
    return rng.random((skip + rows, per_row))[skip:]


def _integers(u: np.ndarray, low, high) -> np.ndarray:
    """Uniform integers in [low, high) from uniforms (high - low may vary per element)."""
    return np.minimum(low + np.floor(u * (np.asarray(high) - low)).astype(np.int64), np.asarray(high) - 1)


class SegmentationDraws(NamedTuple):
    """One sample's draws, or a batch's (a leading axis on every field)."""
    size: np.ndarray  # (2,) int: the keep-ratio resized (height, width)
    origins: np.ndarray  # (CROP_TRIES + 1, 2) int: crop (top, left) candidates, checked in order
    flip: np.ndarray  # () bool
    photometric: np.ndarray  # (9,) float32, see PHOTOMETRIC

    def row(self, k: int) -> "SegmentationDraws":
        return type(self)(*(np.asarray(field)[k] for field in self))


SEGMENTATION_UNIFORMS = 1 + 2 * (CROP_TRIES + 1) + 1 + 9  # ratio, candidates, flip, photometric


def segmentation_draws(shapes, rng: np.random.Generator, a: Augment, skip: int = 0) -> SegmentationDraws:
    """The batch's draws for images of (H, W) = ``shapes`` (B, 2), rows ``skip`` .. of ``rng``'s
    stream: the resize ratio, every crop candidate, the flip and the photometric draws."""
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    u = _uniforms(rng, len(shapes), SEGMENTATION_UNIFORMS, skip)
    ratio = a.ratio_range[0] + (a.ratio_range[1] - a.ratio_range[0]) * u[:, 0]
    if any(a.scale):  # the keep-ratio rescale to the sampled scale, which mmseg truncates
        scale = [(side * ratio).astype(np.int64) for side in a.scale]
        size = keep_ratio_sizes(shapes, np.maximum(*scale), np.minimum(*scale))
    else:  # scale (0, 0): no resizing, as at test time
        size = shapes
    candidates = u[:, 1 : 1 + 2 * (CROP_TRIES + 1)].reshape(-1, CROP_TRIES + 1, 2)
    origins = _integers(candidates, 0, np.maximum(size - np.array(a.crop), 0)[:, None, :] + 1)
    p = u[:, 2 + 2 * (CROP_TRIES + 1) :]
    photometric = np.stack([p[:, 0] < 0.5, -32 + 64 * p[:, 1], _integers(p[:, 2], 0, 2), p[:, 3] < 0.5, 0.5 + p[:, 4],
                            p[:, 5] < 0.5, 0.5 + p[:, 6], p[:, 7] < 0.5, _integers(p[:, 8], -18, 18)], 1).astype(np.float32)
    if not a.photometric:
        photometric[:] = NO_PHOTOMETRIC
    return SegmentationDraws(size, origins.astype(np.int32), u[:, 1 + 2 * (CROP_TRIES + 1)] < a.flip_prob, photometric)


def crop_passes(window: np.ndarray, cat_max_ratio: float) -> bool:
    """mmseg's test: more than one class, none covering cat_max_ratio or more of the labelled pixels."""
    counts = np.bincount(window[window != IGNORE_INDEX].ravel())
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def photometric_distortion(image: np.ndarray, p: np.ndarray) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on uint8 RGB with the draws ``p`` (PHOTOMETRIC); every step
    clips and truncates to uint8, as mmseg's ``convert``; float32 arithmetic."""
    convert = lambda x, f: np.clip(f(x.astype(np.float32)), 0, 255).astype(np.uint8)
    if p[0]:
        image = convert(image, lambda x: x + p[1])
    contrast = lambda x: convert(x, lambda v: v * p[4]) if p[3] else x
    if p[2]:
        image = contrast(image)
    if p[5]:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = convert(hsv[..., 1], lambda v: v * p[6])
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if p[7]:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(p[8])) % 180).astype(np.uint8)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not p[2]:
        image = contrast(image)
    return image


def chosen_crop(labels: np.ndarray, draws: SegmentationDraws, a: Augment) -> int:
    """The first candidate whose window passes cat_max_ratio (the last one unchecked, as mmseg)."""
    if a.cat_max_ratio >= 1:
        return 0
    h, w = min(a.crop[0], draws.size[0]), min(a.crop[1], draws.size[1])
    for k, (top, left) in enumerate(draws.origins[:CROP_TRIES]):
        if crop_passes(labels[top : top + h, left : left + w], a.cat_max_ratio):
            return k
    return CROP_TRIES


def segmentation_crop(image: np.ndarray, labels: np.ndarray, draws: SegmentationDraws, a: Augment) -> tuple[np.ndarray, np.ndarray]:
    """The numpy reference with one sample's draws: -> uint8 crop (h, w, 3) and its labels (h, w) int32, h, w <= the crop size."""
    size = tuple(int(v) for v in draws.size)
    image, labels = resize_pair(image, labels, size)
    top, left = draws.origins[chosen_crop(labels, draws, a)]
    h, w = min(a.crop[0], size[0]), min(a.crop[1], size[1])
    image, labels = image[top : top + h, left : left + w], labels[top : top + h, left : left + w]
    if draws.flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    image = photometric_distortion(np.ascontiguousarray(image), draws.photometric)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels, np.int32)


def segmentation_train(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, a: Augment,
                       statistics: str = "imagenet") -> tuple[np.ndarray, np.ndarray]:
    """One sample's draws from ``rng``, applied -> image normalised with ``statistics`` (crop_h,
    crop_w, 3) float32, labels (crop_h, crop_w) int32."""
    crop, labels = segmentation_crop(image, labels, segmentation_draws([image.shape[:2]], rng, a).row(0), a)
    return pad(finish(crop, NO_COLOUR, a, statistics), labels, a.crop, IGNORE_INDEX)


# Per-sample colour draws of the depth pipeline: (applied 0/1, gamma, brightness, r, g, b), float64
# as drawn (the device gets them as float32).
NO_COLOUR = np.array([0, 1, 1, 1, 1, 1], np.float64)


class DepthDraws(NamedTuple):
    """One sample's draws, or a batch's (a leading axis on every field)."""
    rotate: np.ndarray  # () bool
    angle: np.ndarray  # () float64: the rotation in degrees, where rotate
    flip: np.ndarray  # () bool
    origin: np.ndarray  # (2,) int: crop (top, left)
    colour: np.ndarray  # (6,) see NO_COLOUR

    row = SegmentationDraws.row


DEPTH_UNIFORMS = 2 + 1 + 2 + 1 + 5  # rotation (applied, angle), flip, crop origin, colour (applied, gamma, brightness, rgb)


def depth_draws(shapes, rng: np.random.Generator, a: Augment, skip: int = 0) -> DepthDraws:
    """The batch's draws for depth maps of (H, W) = ``shapes`` (B, 2), rows ``skip`` .. of ``rng``'s stream."""
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    u = _uniforms(rng, len(shapes), DEPTH_UNIFORMS, skip)
    span = lambda k, bounds: bounds[0] + (bounds[1] - bounds[0]) * u[:, k]
    rotate = (u[:, 0] < a.rotate_prob) & (a.rotate_degrees > 0)
    origin = _integers(u[:, 3:5], 0, np.maximum(shapes - np.array(a.crop), 0) + 1)
    coloured = u[:, 5] < a.color_prob
    colour = np.stack([np.ones(len(shapes)), span(6, a.gamma_range), span(7, a.brightness_range),
                       *(span(k, a.color_range) for k in (8, 9, 10))], 1)
    colour = np.where(coloured[:, None], colour, NO_COLOUR)
    return DepthDraws(rotate, span(1, (-a.rotate_degrees, a.rotate_degrees)), u[:, 2] < a.flip_prob, origin, colour)


def rotation_matrix(shape: tuple[int, int], angle: float) -> np.ndarray:
    """(2, 3) float64: the rotation about the image centre that the depth pipeline applies."""
    h, w = shape
    return cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)


def depth_crop(image: np.ndarray, depth: np.ndarray, draws: DepthDraws, a: Augment) -> tuple[np.ndarray, np.ndarray]:
    """The numpy reference with one sample's draws: -> uint8 crop (h, w, 3), depth (h, w) float32 (0 = invalid)."""
    if draws.rotate:
        matrix, (h, w) = rotation_matrix(depth.shape, float(draws.angle)), depth.shape
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)
        depth = cv2.warpAffine(depth, matrix, (w, h), flags=cv2.INTER_NEAREST)
    if draws.flip:
        image, depth = image[:, ::-1], depth[:, ::-1]
    (top, left), h, w = draws.origin, min(a.crop[0], depth.shape[0]), min(a.crop[1], depth.shape[1])
    image, depth = image[top : top + h, left : left + w], depth[top : top + h, left : left + w]
    return np.ascontiguousarray(image), np.ascontiguousarray(depth, np.float32)


def depth_train(image: np.ndarray, depth: np.ndarray, rng: np.random.Generator, a: Augment,
                statistics: str = "imagenet") -> tuple[np.ndarray, np.ndarray]:
    """One sample's draws from ``rng``, applied -> image normalised with ``statistics`` (crop_h,
    crop_w, 3) float32, depth (crop_h, crop_w) float32 (0 = invalid)."""
    draws = depth_draws([depth.shape], rng, a).row(0)
    crop, depth = depth_crop(image, depth, draws, a)
    return pad(finish(crop, draws.colour, a, statistics), depth, a.crop, 0.0)


def finish(crop: np.ndarray, colour: np.ndarray, a: Augment, statistics: str) -> np.ndarray:
    """The numpy reference of the elementwise finish: uint8 (h, w, 3) -> float32, FiT3D's ColorAug
    where ``colour`` says it was drawn (float64, as its numpy code), then normalisation."""
    if a.color_gamma not in ("raw", "unit"):
        raise ValueError(f"augment.color_gamma={a.color_gamma!r} is not 'raw' or 'unit'")
    mean, std = STATISTICS[statistics]
    if not colour[0]:
        return normalize(crop, statistics)
    gamma, brightness, colors = colour[1], colour[2], colour[3:]
    if a.color_gamma == "raw":
        pixels = np.clip(crop.astype(np.float64) ** gamma * brightness * colors, 0, 255)
    else:
        pixels = np.clip((crop.astype(np.float64) / 255) ** gamma * brightness * colors, 0, 1) * 255
    return ((pixels / 255 - mean) / std).astype(np.float32)
