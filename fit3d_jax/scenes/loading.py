"""``load_scene``: one entry point for every scene layout, validated up front; and the per-view
pixel readers (image, mask, depth, labels)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from fit3d_jax.scenes import colmap, nerfstudio
from fit3d_jax.scenes.types import SceneData, SceneError, View


def is_scene_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder in a layout load_scene reads (its contents are checked there)."""
    root = Path(path)
    return root.is_dir() and (nerfstudio.is_scene(root) or colmap.find_model(root) is not None)


def find_scenes(spec: str) -> list[Path]:
    """The scenes named by ``spec``: comma-separated scene folders or folders of scenes."""
    found = []
    for entry in (p.strip() for p in spec.split(",") if p.strip()):
        path = Path(entry)
        if is_scene_dir(path):
            found.append(path)
        elif path.is_dir() and (inside := sorted(p for p in path.iterdir() if is_scene_dir(p))):
            found.extend(inside)
        else:
            raise SceneError(f"{path} is neither a scene (transforms_train.json or a COLMAP model) nor a folder of scenes")
    if not found:
        raise SceneError("no scenes named")
    return found


def load_scene(path: str | os.PathLike, *, test_every: int = 8) -> SceneData:
    """A nerfstudio-style scene (transforms_train.json; its own test split) or a COLMAP scene
    (``test_every``: every n-th image by name is a test view, 0 = none). Everything is checked
    here (files, sizes, poses, points); a problem raises SceneError naming the file and field."""
    if isinstance(test_every, bool) or not isinstance(test_every, int) or test_every < 0:
        raise ValueError(f"test_every={test_every!r} must be an integer >= 0")
    root = Path(path)
    if not root.is_dir():
        raise SceneError(f"{root}: no such scene folder")
    if nerfstudio.is_scene(root):
        return nerfstudio.read_scene(root)
    if colmap.find_model(root) is not None:
        return colmap.read_scene(root, test_every=test_every)
    raise SceneError(
        f"{root}: not a scene: neither {nerfstudio.TRANSFORMS['train']} nor a COLMAP model "
        f"({', '.join(colmap.MODEL_FILES)} as .txt or .bin in sparse/0, sparse or the folder)"
    )


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
