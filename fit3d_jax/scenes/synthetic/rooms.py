"""Rooms on disk: checked parameters, generation into a scene folder, reuse of generated rooms."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

from fit3d_jax.errors import FitError
from fit3d_jax.harness import outputs
from fit3d_jax.scenes import nerfstudio
from fit3d_jax.scenes.synthetic.camera_path import camera_path
from fit3d_jax.scenes.synthetic.furniture import CLASSES, furnish
from fit3d_jax.scenes.synthetic.raycast import Renderer
from fit3d_jax.scenes.synthetic.textures import Palette
from fit3d_jax.scenes.types import SceneData, View

GENERATOR_VERSION = 2  # bump when the same parameters would give a different room
GENERATOR_FILE = "generator.json"


class RoomParameterError(FitError, ValueError):
    """A generator parameter is out of range; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def room_parameters(
    *, seed: int, width: int = 876, height: int = 584, num_train: int = 48, num_test: int = 8, fov_x_deg: float = 90.0,
    num_points: int = 5000, point_noise: float = 0.01,
) -> dict:
    """The checked parameters of a room, as recorded in generator.json. ``fov_x_deg``: horizontal
    field of view (square pixels, principal point at the centre); ``num_points`` sparse points with
    Gaussian jitter of ``point_noise`` metres (std per axis)."""
    checks = [
        ("seed", seed, isinstance(seed, int) and seed >= 0, "an integer >= 0"),
        ("width", width, isinstance(width, int) and width >= 8, "an integer >= 8"),
        ("height", height, isinstance(height, int) and height >= 8, "an integer >= 8"),
        ("num_train", num_train, isinstance(num_train, int) and num_train >= 1, "an integer >= 1"),
        ("num_test", num_test, isinstance(num_test, int) and num_test >= 0, "an integer >= 0"),
        ("fov_x_deg", fov_x_deg, isinstance(fov_x_deg, (int, float)) and 20 <= fov_x_deg <= 120, "in [20, 120] degrees"),
        ("num_points", num_points, isinstance(num_points, int) and num_points >= 1, "an integer >= 1"),
        ("point_noise", point_noise, isinstance(point_noise, (int, float)) and 0 <= point_noise <= 1, "in [0, 1] metres"),
    ]
    for field, value, ok, expected in checks:
        if not ok or isinstance(value, bool):
            raise RoomParameterError(field, f"{value!r} must be {expected}")
    return dict(generator_version=GENERATOR_VERSION, seed=seed, width=width, height=height, num_train=num_train,
                num_test=num_test, fov_x_deg=float(fov_x_deg), num_points=num_points, point_noise=float(point_noise))


def recorded_parameters(room_dir: str | os.PathLike) -> dict | None:
    """The parameters a generated room was made with, or None where there is no generator.json."""
    path = Path(room_dir) / GENERATOR_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def test_indices(count: int, num_test: int) -> set[int]:
    """Test views interleaved along the camera path."""
    return {int((k + 0.5) * count / num_test) for k in range(num_test)} if num_test else set()


def build_room(seed: int, count: int) -> tuple[Renderer, list[np.ndarray]]:
    """Room ``seed`` ready to render, and ``count`` world-to-camera poses along its camera path."""
    palette = Palette(np.random.default_rng([seed, 0]))
    layout = furnish(palette.rng, palette)
    renderer = Renderer(layout, palette)
    return renderer, camera_path(np.random.default_rng([seed, 1]), renderer, count)


def pinhole_rays(view: View) -> np.ndarray:
    """(H, W, 2) camera-space x/z, y/z through the view's pixel centres."""
    xs = (np.arange(view.width) + 0.5 - view.cx) / view.fx
    ys = (np.arange(view.height) + 0.5 - view.cy) / view.fy
    return np.stack(np.broadcast_arrays(xs[None, :], ys[:, None]), -1)


def sparse_points(rng, views, renders, rays, num_points: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Points on the surfaces the views see (``renders``: image and depth, ``rays``: each view's
    pixel rays), with their rendered colours, jittered."""
    per_view = np.full(len(views), num_points // len(views))
    per_view[: num_points % len(views)] += 1
    xyz, rgb = [], []
    for view, (image, depth), ray, count in zip(views, renders, rays, per_view):
        flat = rng.choice(view.width * view.height, size=count, replace=count > view.width * view.height)
        i, j = np.divmod(flat, view.width)
        z = depth[i, j].astype(np.float64)
        camera = np.concatenate([ray[i, j] * z[:, None], z[:, None]], -1)
        rotation, translation = view.world_to_camera[:3, :3], view.world_to_camera[:3, 3]
        xyz.append((camera - translation) @ rotation)
        rgb.append(image[i, j])
    xyz = np.concatenate(xyz)
    return xyz + rng.normal(0, noise, xyz.shape), np.concatenate(rgb)


def write_png(path: Path, pixels: np.ndarray) -> None:
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"{path}: cannot write")


def depth_millimetres(depth: np.ndarray) -> np.ndarray:
    millimetres = np.rint(depth * 1000)
    if millimetres.max() >= 2 ** 16:
        raise RuntimeError(f"depth {depth.max():.1f} m does not fit a uint16 millimetre PNG (a generator bug)")
    return millimetres.astype(np.uint16)


def _write_room(folder: Path, params: dict) -> None:
    seed = params["seed"]
    count = params["num_train"] + params["num_test"]
    renderer, poses = build_room(seed, count)
    width, height = params["width"], params["height"]
    focal = width / 2 / math.tan(math.radians(params["fov_x_deg"]) / 2)
    for sub in ("images", "depth", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    held_out = test_indices(count, params["num_test"])
    views = []
    for k, pose in enumerate(poses):
        name = f"frame_{k:05d}.png"
        views.append(View(name=Path(name).stem, image_path=folder / "images" / name, width=width, height=height, fx=focal, fy=focal,
                          cx=width / 2, cy=height / 2, world_to_camera=pose, depth_path=folder / "depth" / name,
                          label_path=folder / "labels" / name))

    def render(view: View) -> tuple[np.ndarray, np.ndarray]:
        image, depth, labels = renderer.render(view)
        write_png(view.image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        write_png(view.depth_path, depth_millimetres(depth))
        write_png(view.label_path, labels)
        return image, depth

    # Views render independently (the ray casting and PNG encoding release the GIL): one per core.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        renders = list(pool.map(render, views))
    train = [v for k, v in enumerate(views) if k not in held_out]
    test = [v for k, v in enumerate(views) if k in held_out]
    train_renders = [r for k, r in enumerate(renders) if k not in held_out]
    points, colours = sparse_points(np.random.default_rng([seed, 2]), train, train_renders, [pinhole_rays(v) for v in train],
                                    params["num_points"], params["point_noise"])
    nerfstudio.write_scene(SceneData(name=folder.name, root=folder, train=tuple(train), test=tuple(test), points=points,
                                     point_colors=colours, classes=CLASSES))
    (folder / GENERATOR_FILE).write_text(json.dumps(params, indent=1) + "\n")


def has_room(out_dir: str | os.PathLike, *, seed: int, **parameters) -> bool:
    """Whether ``out_dir`` holds room ``seed`` generated with these parameters."""
    return recorded_parameters(out_dir) == room_parameters(seed=seed, **parameters)


def check_replaceable(out_dir: Path, params: dict, overwrite: bool) -> None:
    """FileExistsError unless ``out_dir`` is free, holds this room already, or holds a generated room
    that ``overwrite`` allows replacing (anything else there is never replaced)."""
    if not Path(out_dir).exists():
        return
    recorded = recorded_parameters(out_dir)
    if recorded is None:
        raise FileExistsError(f"{out_dir} exists and is not a generated room (no {GENERATOR_FILE}); not replacing it")
    if recorded != params and not overwrite:
        differ = sorted(k for k in params if recorded.get(k) != params[k])
        raise FileExistsError(f"{out_dir} holds a room generated with other {', '.join(differ) or 'nothing'}; "
                              "remove it, choose another folder or overwrite")


def generate_room(out_dir: str | os.PathLike, *, seed: int, overwrite: bool = False, **parameters) -> Path:
    """Renders room ``seed`` into the scene folder ``out_dir`` and returns it; ``parameters`` and
    their defaults are ``room_parameters``'s (image size, view counts, field of view, sparse points).

    The folder appears only when complete (written beside it, then renamed). An existing folder is
    an error unless ``overwrite`` (then it must be a generated room, which is replaced).
    """
    params = room_parameters(seed=seed, **parameters)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, params, overwrite)
    with outputs.staged(out_dir) as staging:
        _write_room(staging, params)
    return out_dir


def ensure_room(out_dir: str | os.PathLike, *, seed: int, **parameters) -> Path:
    """``out_dir`` if it holds room ``seed`` generated with these parameters, else generates it
    there (an existing folder with anything else in it is an error, see ``generate_room``)."""
    if has_room(out_dir, seed=seed, **parameters):
        return Path(out_dir)
    return generate_room(out_dir, seed=seed, **parameters)
