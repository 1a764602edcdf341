"""Checks every scene reader applies before a View exists: files present and of the declared size,
sane intrinsics, rigid poses. Each error names the file and the field (``where``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fit3d_jax.scenes.types import SceneError, View

# Rotations written with a few decimals are not exactly orthonormal; beyond this they are not rotations.
ROTATION_TOLERANCE = 1e-3


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) from the image header (pixels are not decoded)."""
    if not path.is_file():
        raise SceneError(f"{where}: {path}: no such file")
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as e:
        raise SceneError(f"{where}: {path}: not a readable image ({e})") from None


def check_image_file(path: Path, width: int, height: int, where: str) -> None:
    actual = image_size(path, where)
    if actual != (width, height):
        raise SceneError(f"{where}: {path} is {actual[0]}x{actual[1]} pixels, but w={width}, h={height} are declared")


def finite_number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise SceneError(f"{where}: {value!r} is not a finite number")
    return float(value)


def positive_int(value, where: str) -> int:
    number = finite_number(value, where)
    if number != int(number) or number <= 0:
        raise SceneError(f"{where}: {value!r} is not a positive integer")
    return int(number)


def positive_number(value, where: str) -> float:
    number = finite_number(value, where)
    if number <= 0:
        raise SceneError(f"{where}: {value!r} must be > 0")
    return number


def rigid_world_to_camera(rotation: np.ndarray, translation: np.ndarray, where: str) -> np.ndarray:
    """The 4x4 world-to-camera matrix; the rotation must be proper and orthonormal up to rounding,
    which is then removed (nearest rotation) so that inverses by transposition stay exact."""
    rotation = np.asarray(rotation, np.float64)
    translation = np.asarray(translation, np.float64)
    if not (np.isfinite(rotation).all() and np.isfinite(translation).all()):
        raise SceneError(f"{where}: pose has non-finite values")
    deviation = np.abs(rotation.T @ rotation - np.eye(3)).max()
    if deviation > ROTATION_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise SceneError(
            f"{where}: rotation is not a proper rotation (|R^T R - I| = {deviation:.2g}, det = {np.linalg.det(rotation):.3g})"
        )
    u, _, vt = np.linalg.svd(rotation)
    w2c = np.eye(4)
    w2c[:3, :3] = u @ vt
    w2c[:3, 3] = translation
    return w2c


def make_view(
    *,
    name: str,
    image_path: Path,
    width: int,
    height: int,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    world_to_camera: np.ndarray,
    where: str,
    mask_path: Path | None = None,
    depth_path: Path | None = None,
    label_path: Path | None = None,
) -> View:
    """A View whose image (and mask, depth, labels, where given) exist with the declared size."""
    for field, path in (("image", image_path), ("mask", mask_path), ("depth", depth_path), ("labels", label_path)):
        if path is not None:
            check_image_file(path, width, height, f"{where} ({field})")
    return View(
        name=name, image_path=image_path, width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
        world_to_camera=world_to_camera, mask_path=mask_path, depth_path=depth_path, label_path=label_path,
    )


def check_unique_names(views: Iterable[View], where: str) -> None:
    seen: dict[str, Path] = {}
    for view in views:
        if view.name in seen:
            raise SceneError(f"{where}: two views are named {view.name!r} ({seen[view.name]} and {view.image_path})")
        seen[view.name] = view.image_path


def view_name(image_path: Path, image_dir: Path) -> str:
    """The image's path below ``image_dir`` (or its file name) without suffix: unique and readable."""
    try:
        relative = image_path.relative_to(image_dir)
    except ValueError:
        relative = Path(image_path.name)
    return relative.with_suffix("").as_posix()
