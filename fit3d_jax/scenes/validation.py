"""Checks every scene reader applies before a View exists: files present and of the declared size,
sane intrinsics, rigid poses. Each error names the file and the field (``where``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
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


FIELD_OF_VIEW_DEGREES = (1.0, 175.0)  # a pinhole camera's plausible field of view, across each image axis
PRINCIPAL_POINT_MARGIN = 0.5  # the principal point may lie this share of the image outside it


def check_intrinsics(width: int, height: int, fx: float, fy: float, cx: float, cy: float, fields: Sequence[str]) -> None:
    """Focal lengths that give a plausible field of view, and a principal point near the image;
    ``fields`` names where fx, fy, cx and cy came from (file and field), for the error."""
    low, high = FIELD_OF_VIEW_DEGREES
    for where, focal, size in ((fields[0], fx, width), (fields[1], fy, height)):
        fov = math.degrees(2 * math.atan(size / 2 / focal))
        if not low <= fov <= high:
            raise SceneError(f"{where}: focal length {focal:g} gives a {fov:.3g} degree field of view over {size} pixels, "
                             f"outside {low:g}-{high:g} (wrong units, or intrinsics of another image size?)")
    for where, centre, size in ((fields[2], cx, width), (fields[3], cy, height)):
        if not -PRINCIPAL_POINT_MARGIN * size <= centre <= (1 + PRINCIPAL_POINT_MARGIN) * size:
            raise SceneError(f"{where}: principal point {centre:g} is far outside the {size}-pixel image")


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
    intrinsics_fields: Sequence[str] | None = None,
) -> View:
    """A View with plausible intrinsics whose image (and mask, depth, labels, where given) exist with
    the declared size; ``intrinsics_fields``: where fx, fy, cx, cy came from (default: ``where``)."""
    check_intrinsics(width, height, fx, fy, cx, cy, intrinsics_fields or [f"{where}: {n}" for n in ("fx", "fy", "cx", "cy")])
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


# ---------------------------------------------------------------------------------------------
# Do the sparse points and the cameras describe the same scene?

# A pose convention misread (world frame, camera axes, inverted poses) leaves the points in front
# of indoor cameras about as often as the right reading (measured on the built-in rooms), so the
# geometric share alone cannot tell them apart; the points' colours against the images can: 0.8-0.9
# agreement on the rooms read right, chance level read wrong.
SEEN_VIEWS, SEEN_POINTS = 0.5, 0.25  # shares that must see (be seen by) the points (the views)
MIN_POINTS_PER_VIEW = 3  # every view must see this many (a registered SfM image sees dozens)
# A camera farther from the points' median than this many times the points' radius (90th
# percentile distance) is not looking at this scene: a pose moved away from the others.
MAX_CAMERA_DISTANCE = 10.0
MIN_CORRELATION = 0.15  # median luminance correlation of point colours with the pixels they land on
MAX_CHECK_POINTS, MAX_CHECK_VIEWS, MIN_VIEW_POINTS = 20_000, 24, 20
_LUMA = np.array([0.299, 0.587, 0.114])


def _projections(view: View, world_to_camera: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (row, column) of every point and whether it lies in front of the camera and inside the image."""
    cam = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    z = cam[:, 2]
    front = z > 1e-6
    safe = np.where(front, z, 1.0)
    u = view.fx * cam[:, 0] / safe + view.cx
    v = view.fy * cam[:, 1] / safe + view.cy
    inside = front & (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
    return np.stack([np.where(inside, v, 0), np.where(inside, u, 0)], -1).astype(np.int64), inside


def _colour_agreement(views, poses, points, luma, pixels) -> tuple[float, int]:
    """Median over views (those with enough points in them) of the correlation between the points'
    luminance and the image's at their projections; and how many views counted."""
    scores = []
    for view, pose, image in zip(views, poses, pixels):
        rc, inside = _projections(view, pose, points)
        if inside.sum() < MIN_VIEW_POINTS:
            continue
        seen = image[rc[inside, 0], rc[inside, 1]] @ _LUMA
        a, b = luma[inside] - luma[inside].mean(), seen - seen.mean()
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        scores.append(float((a * b).sum() / denominator) if denominator > 0 else 0.0)
    return (float(np.median(scores)) if scores else float("nan")), len(scores)


def check_points_seen(
    views: Sequence[View], points: np.ndarray, colours: np.ndarray, *, points_file: Path, poses_file: Path,
    read_image: Callable[[View], np.ndarray], alternatives: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> None:
    """Raises SceneError unless the sparse points are seen by the views: in front of the cameras and
    inside the images for most views and a fair share of the points, and, where the points carry
    colours, with those colours matching the pixels they project onto. ``alternatives`` maps a
    likely misreading to the change of a world-to-camera matrix that undoes it; the error names the
    ones under which the points would match."""
    rng = np.random.default_rng(0)
    if len(points) > MAX_CHECK_POINTS:
        keep = rng.choice(len(points), MAX_CHECK_POINTS, replace=False)
        points, colours = points[keep], colours[keep]
    views = list(views)
    where = f"{points_file} against the views of {poses_file}"

    seen_by = np.zeros(len(points), bool)
    need = min(MIN_POINTS_PER_VIEW, len(points))
    counts = []
    for view in views:
        inside = _projections(view, view.world_to_camera, points)[1]
        seen_by |= inside
        counts.append(int(inside.sum()))
    views_seeing = sum(c >= need for c in counts)
    if views_seeing < SEEN_VIEWS * len(views) or seen_by.mean() < SEEN_POINTS:
        raise SceneError(
            f"{where}: the sparse points are not seen by the cameras: {views_seeing} of {len(views)} views have points in "
            f"front of them and inside the image, and {seen_by.mean():.0%} of the points fall in any view (need "
            f"{SEEN_VIEWS:.0%} and {SEEN_POINTS:.0%}). The points and the poses are in different frames, or the poses are "
            "misread (camera-to-world vs world-to-camera, OpenGL vs OpenCV axes)"
        )
    centre = np.median(points, axis=0)
    radius = max(float(np.percentile(np.linalg.norm(points - centre, axis=1), 90)), 1e-9)
    far = [(v.name, float(np.linalg.norm(v.camera_center - centre)) / radius) for v in views]
    far = [(name, d) for name, d in far if d > MAX_CAMERA_DISTANCE]
    if far:
        raise SceneError(f"{where}: view(s) {', '.join(f'{n!r} ({d:.0f}x)' for n, d in far[:5])} sit farther from the sparse "
                         f"points than {MAX_CAMERA_DISTANCE:g} times their radius: those poses are off (moved away from the "
                         "others), or the views belong to another scene")
    blind = [(v.name, c) for v, c in zip(views, counts) if c < need]
    if blind:
        raise SceneError(f"{where}: view(s) {', '.join(f'{n!r} ({c})' for n, c in blind[:5])}{' ...' if len(blind) > 5 else ''} "
                         f"see fewer than {need} of the sparse points, in front of the camera and inside the image, while "
                         f"{views_seeing} of {len(views)} views do: those poses are off (moved or turned away from the scene)")

    luma = colours.astype(np.float64) @ _LUMA
    if luma.std() < 2.0:  # uncoloured points (all one value): nothing to compare
        return
    sample = views[:: max(1, -(-len(views) // MAX_CHECK_VIEWS))]
    pixels = [read_image(v).astype(np.float64) for v in sample]
    poses = [v.world_to_camera for v in sample]
    score, counted = _colour_agreement(sample, poses, points, luma, pixels)
    if counted < 3 or score >= MIN_CORRELATION:
        return
    likely = []
    for cause, change in (alternatives or {}).items():
        other, other_counted = _colour_agreement(sample, [change(p) for p in poses], points, luma, pixels)
        if other_counted >= 3 and other >= MIN_CORRELATION:
            likely.append(f"{cause} (then {other:.2f})")
    raise SceneError(
        f"{where}: the sparse points' colours do not match the images they project onto (median correlation {score:.2f} "
        f"over {counted} views; a scene read right scores above {MIN_CORRELATION}). "
        + (f"Likely cause: {'; or '.join(likely)}." if likely else
           "The poses, the intrinsics or the points are in another convention or frame, or belong to another scene.")
    )
