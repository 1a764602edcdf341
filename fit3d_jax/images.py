"""Image loading and preparation for the ViT: RGB uint8 in, normalised float32 out (ImageNet's
statistics, as FiT3D uses for every backbone, or a model's own: ``ViTConfig.input_statistics``).

Sizes: the ViT needs height and width that are multiples of the patch size (14). Images are
*resized* to such a size, keeping the aspect ratio up to the rounding (never cropped).
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import cv2
import numpy as np

from fit3d_jax.errors import FitError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# (mean, std) per name in models.dinov2.INPUT_STATISTICS; OpenAI's CLIP values as timm writes them.
STATISTICS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "openai_clip": (np.array([0.48145466, 0.4578275, 0.40821073], np.float32), np.array([0.26862954, 0.26130258, 0.27577711], np.float32)),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Real photographs shipped with scikit-image (offline demo inputs).
DEMO_IMAGES = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")


class ImageError(FitError, ValueError):
    """An image file or folder cannot be used; the message names it."""


def demo_images() -> list[Path]:
    data = importlib.resources.files("skimage") / "data"
    return [Path(str(data / name)) for name in DEMO_IMAGES]


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Image files (by suffix) directly inside ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(f"{directory}: no such folder")
    found = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ImageError(f"{directory}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def load_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB; grey images are expanded, alpha is dropped, 16-bit is scaled to 8."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{path}: cannot read image (missing, unreadable or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def patch_multiple_size(
    height: int, width: int, *, patch_size: int = 14, short_side: int | None = None
) -> tuple[int, int]:
    """Target (h, w), multiples of ``patch_size`` (at least one patch).

    Without ``short_side`` each side is rounded *down* (FiT3D's rule: never upsample). With it,
    the image is scaled so its short side is ``short_side`` and each side is rounded to the
    *nearest* multiple, which keeps the aspect ratio best.
    """
    if short_side:
        scale = short_side / min(height, width)
        return tuple(max(patch_size, round(s * scale / patch_size) * patch_size) for s in (height, width))
    return tuple(max(patch_size, s // patch_size * patch_size) for s in (height, width))


def resize_to_patch_multiple(
    image: np.ndarray, *, patch_size: int = 14, short_side: int | None = None
) -> np.ndarray:
    """Resizes (H, W, C) to ``patch_multiple_size``; area filter when shrinking, cubic otherwise."""
    h, w = patch_multiple_size(*image.shape[:2], patch_size=patch_size, short_side=short_side)
    if (h, w) == image.shape[:2]:
        return image
    shrinking = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def normalize(image: np.ndarray, statistics: str = "imagenet") -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 with the mean/std of ``statistics`` (a STATISTICS name)."""
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB (..., 3), got {image.dtype} {image.shape}")
    mean, std = STATISTICS[statistics]
    return (image.astype(np.float32) / 255.0 - mean) / std

