"""Host-side training augmentation and test-time resizing, as the protocol's pipelines do it.

Segmentation (mmseg's ADE20K / VOC pipeline): keep-ratio resize to ``scale`` x U(ratio_range),
random crop with ``cat_max_ratio`` (up to 10 tries for a crop no single class dominates),
horizontal flip, photometric distortion (brightness, contrast before or after, saturation, hue),
normalise, pad to the crop (image 0, label IGNORE_INDEX).

Depth (FiT3D's depth-toolbox pipeline, after the dataset's own crop: NYUCrop, KBCrop): random
rotation (image bilinear, depth nearest, zero borders), horizontal flip, random crop, colour
augmentation (gamma, brightness, per-channel colour), normalise, pad to the crop (depth 0 = invalid).

Randomness comes from a numpy Generator the caller seeds per (seed, step, sample), so a resumed
run draws the same batches.

Each pipeline is two parts. The host part (``segmentation_crop``, ``depth_crop``) makes every
random decision and the geometric and uint8 steps, and returns the uint8 crop with its draws. The
finish (colour augmentation for depth, normalisation, padding) is elementwise: ``finish`` is its
numpy reference, ``finish_batch`` its JAX form, which the probe's step runs on the device on a
batch of uint8 crops (a quarter of float32's bytes to move). ``segmentation_train`` and
``depth_train`` are the whole pipeline on the host.
"""

from __future__ import annotations

import dataclasses

import cv2
import jax
import jax.numpy as jnp
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


def keep_ratio_size(height: int, width: int, scale: tuple[float, float]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest size with long side <= max(scale) and short side
    <= min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_pair(image: np.ndarray, target: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear, target (labels or depth) nearest."""
    if size == image.shape[:2]:
        return image, target
    return (cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR),
            cv2.resize(target, size[::-1], interpolation=cv2.INTER_NEAREST))


def _crop_origin(rng: np.random.Generator, shape: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = min(crop[0], shape[0]), min(crop[1], shape[1])
    return int(rng.integers(0, shape[0] - h + 1)), int(rng.integers(0, shape[1] - w + 1)), h, w


def pad(image: np.ndarray, target: np.ndarray, crop: tuple[int, int], fill) -> tuple[np.ndarray, np.ndarray]:
    pad = ((0, crop[0] - image.shape[0]), (0, crop[1] - image.shape[1]))
    return np.pad(image, pad + ((0, 0),)), np.pad(target, pad, constant_values=fill)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on uint8 RGB (each step applied with probability 0.5; every
    step clips and truncates to uint8, as mmseg's ``convert``)."""

    def convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if rng.random() < 0.5:
        image = convert(image, beta=rng.uniform(-32, 32))
    contrast_first = rng.integers(2) == 1
    contrast = lambda x: convert(x, alpha=rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else x
    if contrast_first:
        image = contrast(image)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = convert(hsv[..., 1], alpha=rng.uniform(0.5, 1.5))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + rng.integers(-18, 18)) % 180).astype(np.uint8)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first:
        image = contrast(image)
    return image


def segmentation_crop(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, a: Augment) -> tuple[np.ndarray, np.ndarray]:
    """The host part: -> uint8 crop (h, w, 3) and its labels (h, w) int32, h, w <= the crop size."""
    ratio = rng.uniform(*a.ratio_range)
    scale = (int(a.scale[0] * ratio), int(a.scale[1] * ratio))  # mmseg truncates the sampled scale
    image, labels = resize_pair(image, labels, keep_ratio_size(*image.shape[:2], scale))
    top, left, h, w = _crop_origin(rng, image.shape[:2], a.crop)
    for _ in range(10 if a.cat_max_ratio < 1 else 0):
        window = labels[top : top + h, left : left + w]
        counts = np.unique(window[window != IGNORE_INDEX], return_counts=True)[1]
        if len(counts) > 1 and counts.max() / counts.sum() < a.cat_max_ratio:
            break
        top, left, h, w = _crop_origin(rng, image.shape[:2], a.crop)
    image, labels = image[top : top + h, left : left + w], labels[top : top + h, left : left + w]
    if rng.random() < a.flip_prob:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if a.photometric:
        image = photometric_distortion(np.ascontiguousarray(image), rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(labels, np.int32)


def segmentation_train(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, a: Augment,
                       statistics: str = "imagenet") -> tuple[np.ndarray, np.ndarray]:
    """-> image normalised with ``statistics`` (crop_h, crop_w, 3) float32, labels (crop_h, crop_w) int32."""
    crop, labels = segmentation_crop(image, labels, rng, a)
    return pad(finish(crop, NO_COLOUR, a, statistics), labels, a.crop, IGNORE_INDEX)


# Per-sample colour draws of the depth pipeline: (applied 0/1, gamma, brightness, r, g, b), float64
# as drawn (the device gets them as float32).
NO_COLOUR = np.array([0, 1, 1, 1, 1, 1], np.float64)


def depth_crop(image: np.ndarray, depth: np.ndarray, rng: np.random.Generator, a: Augment) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The host part: -> uint8 crop (h, w, 3), depth (h, w) float32 (0 = invalid), colour draws (6,)."""
    if rng.random() < a.rotate_prob and a.rotate_degrees > 0:
        angle = rng.uniform(-a.rotate_degrees, a.rotate_degrees)
        h, w = depth.shape
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)
        depth = cv2.warpAffine(depth, matrix, (w, h), flags=cv2.INTER_NEAREST)
    if rng.random() < a.flip_prob:
        image, depth = image[:, ::-1], depth[:, ::-1]
    top, left, h, w = _crop_origin(rng, depth.shape, a.crop)
    image, depth = image[top : top + h, left : left + w], depth[top : top + h, left : left + w]
    colour = NO_COLOUR
    if rng.random() < a.color_prob:
        gamma, brightness = rng.uniform(*a.gamma_range), rng.uniform(*a.brightness_range)
        colour = np.array([1, gamma, brightness, *rng.uniform(*a.color_range, size=3)], np.float64)
    return np.ascontiguousarray(image), np.ascontiguousarray(depth, np.float32), colour


def depth_train(image: np.ndarray, depth: np.ndarray, rng: np.random.Generator, a: Augment,
                statistics: str = "imagenet") -> tuple[np.ndarray, np.ndarray]:
    """-> image normalised with ``statistics`` (crop_h, crop_w, 3) float32, depth (crop_h, crop_w) float32 (0 = invalid)."""
    crop, depth, colour = depth_crop(image, depth, rng, a)
    return pad(finish(crop, colour, a, statistics), depth, a.crop, 0.0)


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


def finish_batch(crops: jax.Array, sizes: jax.Array, colour: jax.Array, a: Augment, statistics: str) -> jax.Array:
    """``finish`` on the device, for a batch: crops uint8 (B, H, W, 3) with each sample's crop in its
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
    rows, cols = jnp.arange(crops.shape[1]), jnp.arange(crops.shape[2])
    inside = (rows[None, :, None] < sizes[:, 0, None, None]) & (cols[None, None, :] < sizes[:, 1, None, None])
    return jnp.where(inside[..., None], out, 0.0)
