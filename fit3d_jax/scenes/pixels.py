"""Per-view pixel readers: image, mask, depth and labels, each decoded strictly and checked against
the view's size. One decoder (Pillow) serves the up-front check of every scene and the training
that follows, so an image that passes is read the same way later:

- a truncated or damaged file is an error (never a grey-filled half image);
- pixels are taken as stored: a file whose EXIF orientation asks viewers to rotate or mirror it is
  refused, since its poses and intrinsics may belong to either orientation;
- an image with transparent pixels is refused (give a mask instead); an opaque alpha is dropped.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fit3d_jax.scenes.types import SceneError, View

EXIF_ORIENTATION = 0x0112


def decode(path: str | os.PathLike, what: str) -> np.ndarray:
    """The stored pixels of ``path``: (H, W) or (H, W, C) as the file holds them, or a SceneError
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"{path}: no such file ({what})")
    try:
        with Image.open(path) as image:
            image.load()  # the whole file: truncation raises here
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            if orientation != 1:
                raise SceneError(
                    f"{path}: EXIF orientation {orientation} asks viewers to rotate or mirror the {what}; its camera "
                    "may belong to either orientation. Store it upright without the tag (PIL.ImageOps.exif_transpose), "
                    "or drop the tag if the poses were computed on the stored pixels"
                )
            if image.mode in ("P", "PA") and what == "image":
                image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise SceneError(f"{path}: cannot decode the {what} ({e})") from None
    return pixels


def _sized(pixels: np.ndarray, path: Path, view: View, what: str) -> np.ndarray:
    if pixels.shape[:2] != (view.height, view.width):
        raise SceneError(f"{path}: {what} is {pixels.shape[1]}x{pixels.shape[0]}, view {view.name!r} is {view.width}x{view.height}")
    return pixels


def read_image(view: View) -> np.ndarray:
    """(H, W, 3) uint8 RGB; grey is expanded, 16-bit scaled to 8, an opaque alpha dropped."""
    pixels = _sized(decode(view.image_path, "image"), view.image_path, view, "image")
    if pixels.dtype == np.uint16 or pixels.dtype == np.int32:
        pixels = (np.clip(pixels, 0, 65535) >> 8).astype(np.uint8)
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.shape[-1] in (2, 4):
        if (pixels[..., -1] < 255).any():
            raise SceneError(f"{view.image_path}: has transparent pixels (alpha < 255); give the view a mask instead of alpha")
        pixels = pixels[..., :-1]
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 3:
        raise SceneError(f"{view.image_path}: unsupported image layout {pixels.dtype} {pixels.shape}")
    return np.ascontiguousarray(pixels)


# A view whose mask keeps less than this share of its pixels is refused: inverted (0 = keep) or
# another image's mask, and its metrics would be the handful of pixels left.
MIN_MASK_VALID = 0.01


def read_mask(view: View) -> np.ndarray | None:
    """The view's mask (``decode_mask``), or None."""
    return None if view.mask_path is None else decode_mask(view.mask_path, view.width, view.height)


def decode_mask(path: Path, width: int, height: int) -> np.ndarray:
    """(H, W) bool, True where the pixel counts (any nonzero colour channel); stages I and II read
    masks with it. An alpha channel is transparency, not the mask: an opaque one is dropped, a
    transparent pixel is an error (which way it would mean is anyone's guess)."""
    mask = decode(path, "mask")
    if mask.shape[:2] != (height, width):
        raise SceneError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, its view is {width}x{height}")
    if mask.ndim == 3 and mask.shape[-1] in (2, 4):
        opaque = np.iinfo(mask.dtype).max if mask.dtype.kind in "ui" else 1
        if (mask[..., -1] < opaque).any():
            raise SceneError(f"{path}: the mask has transparent pixels; give it as one channel, 0 where pixels are ignored, "
                             "nonzero where they count")
        mask = mask[..., :-1]
    mask = mask.any(axis=-1) if mask.ndim == 3 else mask != 0
    if mask.mean() < MIN_MASK_VALID:
        raise SceneError(f"{path}: the mask keeps {mask.mean():.2%} of its view's pixels (at least {MIN_MASK_VALID:.0%} "
                         "needed): 0 marks pixels that are ignored, nonzero those that count; is it inverted, or another image's?")
    return mask


def read_depth(view: View) -> np.ndarray | None:
    """(H, W) float32 camera-space z in metres from a uint16 millimetre PNG; 0 = no surface."""
    if view.depth_path is None:
        return None
    depth = _sized(decode(view.depth_path, "depth"), view.depth_path, view, "depth")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise SceneError(f"{view.depth_path}: depth must be a one-channel uint16 PNG (millimetres), got {depth.dtype} {depth.shape}")
    return depth.astype(np.float32) / 1000.0


def read_labels(view: View) -> np.ndarray | None:
    """(H, W) integer class ids (SceneData.classes names them)."""
    if view.label_path is None:
        return None
    labels = _sized(decode(view.label_path, "labels"), view.label_path, view, "labels")
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise SceneError(f"{view.label_path}: labels must be a one-channel uint8/uint16 PNG, got {labels.dtype} {labels.shape}")
    return labels


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (what a cache or a checkpoint of the file's content is keyed by)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
