"""The nerfstudio-style layout FiT3D uses for ScanNet++ DSLR scenes: reader and writer.

A scene folder holds::

    transforms_train.json   required; transforms_test.json optional (no file = no test views)
    images/                 the frames' file_path (relative to the folder, or to images/ as
                            ScanNet++ writes them)
    masks/                  optional frames[].mask_path (relative to the folder or to masks/);
                            nonzero = pixel counts
    points3D.txt            COLMAP text sparse points
    classes.json            optional list of label names by id (synthetic rooms)
    depth/, labels/         optional frames[].depth_path / label_path (synthetic rooms)

Each JSON has ``fl_x, fl_y, cx, cy, w, h`` at the top level or per frame (a frame's value wins),
``frames[].file_path`` and ``frames[].transform_matrix``: camera-to-world in the OpenGL convention
(x right, y up, z backward). ``camera_model`` may be PINHOLE, SIMPLE_PINHOLE, or OPENCV with all
distortion coefficients (k1..k4, p1, p2) zero. Where nerfstudio's ``applied_transform`` (3x4) is
present, points3D.txt is in COLMAP's frame and that transform takes it to the frames' world, as
nerfstudio's ``ns-process-data`` writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fit3d_jax.scenes import colmap, validation
from fit3d_jax.scenes.types import SceneData, SceneError, View

TRANSFORMS = {"train": "transforms_train.json", "test": "transforms_test.json"}
POINTS_FILE = "points3D.txt"
CLASSES_FILE = "classes.json"
CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV")
DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
# Flips camera y and z: OpenGL camera axes <-> OpenCV camera axes (the same matrix both ways).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
# Optional per-frame files: JSON key (= View field) -> the folder a bare file name is looked up in.
FRAME_FILES = {"mask_path": "masks", "depth_path": "depth", "label_path": "labels"}


def is_scene(root: Path) -> bool:
    return (root / TRANSFORMS["train"]).is_file()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SceneError(f"{path}: malformed JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: cannot read ({e})") from None


def _resolve(root: Path, value, where: str, fallback_dir: str) -> Path:
    if not isinstance(value, str) or not value:
        raise SceneError(f"{where}: {value!r} is not a file path")
    relative = Path(value)
    candidates = [relative] if relative.is_absolute() else [root / relative, root / fallback_dir / relative]
    for path in candidates:
        if path.is_file():
            return path
    raise SceneError(f"{where}: {value!r}: no such file (looked for {' and '.join(map(str, candidates))})")


class _Frame:
    """One frame's fields, falling back to the file's top level; errors name where a value came from."""

    def __init__(self, meta: dict, frame: dict, json_path: Path, index: int):
        self.meta, self.frame, self.json_path = meta, frame, json_path
        self.where = f"{json_path}: frames[{index}]"

    def get(self, key: str, default=None):
        if key in self.frame:
            return self.frame[key], f"{self.where}.{key}"
        return self.meta.get(key, default), f"{self.json_path}: {key}"

    def require(self, key: str):
        value, where = self.get(key)
        if value is None:
            raise SceneError(f"{self.where}: missing '{key}' (neither in the frame nor at the top level)")
        return value, where

    def own(self, key: str):
        """A field that only a frame can have."""
        if key not in self.frame:
            raise SceneError(f"{self.where}: missing '{key}'")
        return self.frame[key], f"{self.where}.{key}"


def _camera_model(frame: _Frame) -> None:
    model, where = frame.get("camera_model", "PINHOLE")
    if model not in CAMERA_MODELS:
        raise SceneError(
            f"{where}: camera model {model!r} is not supported: use undistorted images with PINHOLE, "
            "SIMPLE_PINHOLE or OPENCV with zero distortion"
        )
    for key in DISTORTION:
        value, where = frame.get(key, 0.0)
        if validation.finite_number(value, where) != 0:
            raise SceneError(f"{where}: distortion coefficient {key}={value} is not zero; undistort the images first")


def _world_to_camera(value, where: str) -> np.ndarray:
    try:
        matrix = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: not a matrix of numbers") from None
    if matrix.shape not in ((4, 4), (3, 4)):
        raise SceneError(f"{where}: expected a 4x4 (or 3x4) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise SceneError(f"{where}: non-finite values")
    if matrix.shape == (4, 4) and not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise SceneError(f"{where}: last row {matrix[3].tolist()} is not [0, 0, 0, 1]")
    camera_to_world = np.eye(4)
    camera_to_world[:3] = matrix[:3]
    camera_to_world = camera_to_world @ GL_TO_CV
    rotation = camera_to_world[:3, :3]
    w2c = validation.rigid_world_to_camera(rotation.T, np.zeros(3), where)
    w2c[:3, 3] = -w2c[:3, :3] @ camera_to_world[:3, 3]  # with the cleaned rotation: the centre stays exact
    return w2c


def _view(root: Path, frame: _Frame) -> View:
    if not isinstance(frame.frame, dict):
        raise SceneError(f"{frame.where}: expected an object, got {type(frame.frame).__name__}")
    _camera_model(frame)
    width, height = (validation.positive_int(*frame.require(key)) for key in ("w", "h"))
    fx, fy = (validation.positive_number(*frame.require(key)) for key in ("fl_x", "fl_y"))
    cx, cy = (validation.finite_number(*frame.require(key)) for key in ("cx", "cy"))
    image_path = _resolve(root, *frame.own("file_path"), "images")
    extra = {key: _resolve(root, *frame.own(key), folder) for key, folder in FRAME_FILES.items() if key in frame.frame}
    return validation.make_view(
        name=validation.view_name(image_path, root / "images"),
        image_path=image_path,
        width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
        world_to_camera=_world_to_camera(*frame.own("transform_matrix")),
        where=frame.where,
        **extra,
    )


def _read_split(root: Path, split: str) -> tuple[tuple[View, ...], dict]:
    path = root / TRANSFORMS[split]
    if split == "test" and not path.exists():
        return (), {}
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise SceneError(f"{path}: expected a JSON object at the top level, got {type(meta).__name__}")
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise SceneError(f"{path}: missing 'frames' (a list)")
    if split == "train" and not frames:
        raise SceneError(f"{path}: frames: empty train split")
    return tuple(_view(root, _Frame(meta, f, path, i)) for i, f in enumerate(frames)), meta


def _applied_transform(metas: dict[str, dict], root: Path) -> np.ndarray | None:
    found = {split: meta["applied_transform"] for split, meta in metas.items() if "applied_transform" in meta}
    if len(found) == 2 and found["train"] != found["test"]:
        raise SceneError(f"{root}: applied_transform differs between {TRANSFORMS['train']} and {TRANSFORMS['test']}")
    if not found:
        return None
    split, value = next(iter(found.items()))
    where = f"{root / TRANSFORMS[split]}: applied_transform"
    try:
        matrix = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: not a matrix of numbers") from None
    if matrix.shape not in ((3, 4), (4, 4)) or not np.isfinite(matrix).all():
        raise SceneError(f"{where}: expected a finite 3x4 matrix, got shape {matrix.shape}")
    return matrix[:3]


def _classes(root: Path) -> tuple[str, ...] | None:
    path = root / CLASSES_FILE
    if not path.exists():
        return None
    names = _read_json(path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SceneError(f"{path}: expected a JSON list of class names (index = label id)")
    return tuple(names)


def read_scene(root: Path) -> SceneData:
    train, train_meta = _read_split(root, "train")
    test, test_meta = _read_split(root, "test")
    validation.check_unique_names(train + test, str(root))
    points_path = root / POINTS_FILE
    if not points_path.is_file():
        raise SceneError(f"{root}: no {POINTS_FILE} (the sparse points that initialise the Gaussians)")
    xyz, rgb = colmap.read_points3d_text(points_path)
    transform = _applied_transform({"train": train_meta, "test": test_meta}, root)
    if transform is not None:
        xyz = xyz @ transform[:, :3].T + transform[:, 3]
    return SceneData(name=root.absolute().name, root=root, train=train, test=test, points=xyz, point_colors=rgb, classes=_classes(root))


# ---------------------------------------------------------------------------------------------
# Writer


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise SceneError(f"cannot write {root}: {path} is not inside the scene folder") from None


def camera_to_world_gl(world_to_camera: np.ndarray) -> np.ndarray:
    rotation, translation = world_to_camera[:3, :3], world_to_camera[:3, 3]
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = rotation.T
    camera_to_world[:3, 3] = -rotation.T @ translation
    return camera_to_world @ GL_TO_CV


def _transforms(views: tuple[View, ...], root: Path) -> dict:
    """Intrinsics at the top level when all views share them, else per frame."""
    intrinsics = [dict(fl_x=v.fx, fl_y=v.fy, cx=v.cx, cy=v.cy, w=v.width, h=v.height) for v in views]
    shared = all(i == intrinsics[0] for i in intrinsics)
    meta = {"camera_model": "PINHOLE", **(intrinsics[0] if views and shared else {}), "frames": []}
    for view, own in zip(views, intrinsics):
        frame = {} if shared else dict(own)
        frame["file_path"] = _relative(view.image_path, root)
        frame["transform_matrix"] = camera_to_world_gl(view.world_to_camera).tolist()
        for key in FRAME_FILES:
            if getattr(view, key) is not None:
                frame[key] = _relative(getattr(view, key), root)
        meta["frames"].append(frame)
    return meta


def write_scene(scene: SceneData) -> None:
    """The JSONs, points3D.txt and (with classes) classes.json into ``scene.root``; the image,
    mask, depth and label files must already be there."""
    for split, views in (("train", scene.train), ("test", scene.test)):
        (scene.root / TRANSFORMS[split]).write_text(json.dumps(_transforms(views, scene.root), indent=1) + "\n")
    colmap.write_points3d_text(scene.root / POINTS_FILE, scene.points, scene.point_colors)
    if scene.classes is not None:
        (scene.root / CLASSES_FILE).write_text(json.dumps(list(scene.classes)) + "\n")
