"""Per-view pixel readers: image, mask, depth and labels, each checked against the view's size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fit3d_jax.scenes.types import SceneError, View


def _read(path: Path, flags: int, view: View, what: str) -> np.ndarray:
    pixels = cv2.imread(str(path), flags)
    if pixels is None:
        raise SceneError(f"{path}: cannot read the {what} of view {view.name!r}")
    if pixels.shape[:2] != (view.height, view.width):
        raise SceneError(
            f"{path}: {what} is {pixels.shape[1]}x{pixels.shape[0]}, view {view.name!r} is {view.width}x{view.height}"
        )
    return pixels


def read_image(view: View) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    return cv2.cvtColor(_read(view.image_path, cv2.IMREAD_COLOR, view, "image"), cv2.COLOR_BGR2RGB)


def read_mask(view: View) -> np.ndarray | None:
    """(H, W) bool, True where the pixel counts (any nonzero channel)."""
    if view.mask_path is None:
        return None
    mask = _read(view.mask_path, cv2.IMREAD_UNCHANGED, view, "mask")
    return mask.any(axis=-1) if mask.ndim == 3 else mask != 0


def read_depth(view: View) -> np.ndarray | None:
    """(H, W) float32 camera-space z in metres from a uint16 millimetre PNG; 0 = no surface."""
    if view.depth_path is None:
        return None
    depth = _read(view.depth_path, cv2.IMREAD_UNCHANGED, view, "depth")
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise SceneError(f"{view.depth_path}: depth must be a one-channel uint16 PNG (millimetres), got {depth.dtype} {depth.shape}")
    return depth.astype(np.float32) / 1000.0


def read_labels(view: View) -> np.ndarray | None:
    """(H, W) integer class ids (SceneData.classes names them)."""
    if view.label_path is None:
        return None
    labels = _read(view.label_path, cv2.IMREAD_UNCHANGED, view, "labels")
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise SceneError(f"{view.label_path}: labels must be a one-channel uint8/uint16 PNG, got {labels.dtype} {labels.shape}")
    return labels
