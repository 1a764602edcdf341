"""ScanNet++ DSLR scenes in nerfstudio-style transforms JSONs, read as the ScanNet++ toolkit and
FiT3D write them; and the writer of FiT3D's scene folder (the built-in rooms use it).

FiT3D's scene folder (``scannetpp_preprocess/reorganize_data.py``)::

    transforms_train.json   the toolkit's nerfstudio/transforms_undistorted.json, renamed: ``frames``
                            (the training views) and ``test_frames`` (held out) in one file
    images/                 frames' ``file_path``: bare names (``DSC01234.JPG``) below images/
    masks/                  frames' ``mask_path`` (bare ``.png``): 255 = valid, 0 = anonymised
    points3D.txt            COLMAP text sparse points, in the COLMAP (= mesh) world frame
    classes.json, depth/, labels/   built-in rooms only: label names and per-frame
                            ``depth_path`` / ``label_path`` (ground truth)

The same JSON reader serves the toolkit's own ``dslr/`` folders (``scenes.scannetpp``).

What the toolkit writes (``common/utils/nerfstudio.py``, ``dslr/undistort.py``), and how it is read:

- Intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top level (a frame's own value wins), with
  ``camera_model``: ``OPENCV_FISHEYE`` with ``k1..k4`` as downloaded, ``PINHOLE`` (every k set to 0)
  after undistortion. Distorted images are refused: run ``configs/prepare_scannetpp.py`` first.
- ``transform_matrix`` = P · c2w_colmap · diag(1, -1, -1, 1) with P = [[0,1,0],[1,0,0],[0,0,-1]]
  on the rows: OpenGL camera axes in a world with x and y swapped and z negated. This reader inverts
  exactly that (as FiT3D's ``scene/dataset_readers.py`` does), so the views, the points and every
  output are in the COLMAP / mesh frame.
- Frames with ``is_bad: true`` are left out (the toolkit keeps them; the scene's notes count them).
- The toolkit's downscale step extends ``frames`` with ``test_frames`` in place, so its output
  (and FiT3D's preprocessed scenes) list every test view among the training frames too. A frame in
  both lists is held out; the notes count them.

Two older nerfstudio readings stay: where nerfstudio's ``applied_transform`` (3x4) is present the
frames are plain OpenGL camera-to-world and points3D.txt is in COLMAP's frame, taken to the frames'
world by that transform (``ns-process-data``); a ``transforms_test.json`` beside the training file
(the layout earlier versions of this project wrote) holds the test views, with plain poses in the
points' frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fit3d_jax.scenes import colmap, pixels, validation
from fit3d_jax.scenes.types import SceneData, SceneError, View

TRANSFORMS = "transforms_train.json"
LEGACY_TEST = "transforms_test.json"
POINTS_FILE = "points3D.txt"
CLASSES_FILE = "classes.json"
CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "OPENCV_FISHEYE")
DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
# Flips camera y and z: OpenGL camera axes <-> OpenCV camera axes (the same matrix both ways).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
# The ScanNet++ toolkit's world permutation of camera-to-world rows (its own inverse).
SCANNETPP_WORLD = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]])
# Per-frame files: JSON key (= View field) -> the folder a bare file name is looked up in.
FRAME_FILES = {"mask_path": "masks", "depth_path": "depth", "label_path": "labels"}
PREPARE = "run `python -m fit3d_jax.main --config=configs/prepare_scannetpp.py --config.data_root=<ScanNet++ root>` first"


def is_scene(root: Path) -> bool:
    return (root / TRANSFORMS).is_file()


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SceneError(f"{path}: malformed JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: cannot read ({e})") from None


def _resolve(value, where: str, folders: list[Path]) -> Path:
    """A frame's file: looked up below each of ``folders`` in turn (absolute paths as they are)."""
    if not isinstance(value, str) or not value:
        raise SceneError(f"{where}: {value!r} is not a file path")
    relative = Path(value)
    candidates = [relative] if relative.is_absolute() else [folder / relative for folder in folders]
    for path in candidates:
        if path.is_file():
            return path
    raise SceneError(f"{where}: {value!r}: no such file (looked for {' and '.join(map(str, candidates))})")


class _Frame:
    """One frame's fields, falling back to the file's top level; errors name where a value came from."""

    def __init__(self, meta: dict, frame: dict, json_path: Path, where: str):
        self.meta, self.frame, self.json_path, self.where = meta, frame, json_path, where
        if not isinstance(frame, dict):
            raise SceneError(f"{where}: expected an object, got {type(frame).__name__}")

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

    def is_bad(self) -> bool:
        value = self.frame.get("is_bad", False)
        if not isinstance(value, bool):
            raise SceneError(f"{self.where}.is_bad: {value!r} is not true or false")
        return value


def _check_camera_model(frame: _Frame) -> None:
    model, where = frame.get("camera_model", "PINHOLE")
    if model not in CAMERA_MODELS:
        raise SceneError(f"{where}: camera model {model!r} is not supported: undistort the images to PINHOLE first")
    for key in DISTORTION:
        value, key_where = frame.get(key, 0.0)
        if validation.finite_number(value, key_where) != 0:
            fix = PREPARE if model == "OPENCV_FISHEYE" else "undistort the images first"
            raise SceneError(f"{key_where}: the images are distorted ({where}: {model}, {key}={value}); {fix}")


def _world_to_camera(value, where: str, world: np.ndarray) -> np.ndarray:
    """World-to-camera (OpenCV axes) from an OpenGL camera-to-world, after ``world`` (a row
    permutation of the camera-to-world, identity for plain nerfstudio files)."""
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
    camera_to_world = world @ camera_to_world @ GL_TO_CV
    rotation = camera_to_world[:3, :3]
    w2c = validation.rigid_world_to_camera(rotation.T, np.zeros(3), where)
    w2c[:3, 3] = -w2c[:3, :3] @ camera_to_world[:3, 3]  # with the cleaned rotation: the centre stays exact
    return w2c


def _view(frame: _Frame, image_dirs: list[Path], frame_dirs: dict[str, list[Path]], world: np.ndarray) -> View:
    _check_camera_model(frame)
    width, height = (validation.positive_int(*frame.require(key)) for key in ("w", "h"))
    fields = [frame.require(key) for key in ("fl_x", "fl_y", "cx", "cy")]
    fx, fy = (validation.positive_number(*value) for value in fields[:2])
    cx, cy = (validation.finite_number(*value) for value in fields[2:])
    image_path = _resolve(*frame.own("file_path"), image_dirs)
    extra = {key: _resolve(*frame.own(key), frame_dirs.get(key, [])) for key in FRAME_FILES if key in frame.frame}
    name = next((validation.view_name(image_path, d) for d in image_dirs if image_path.is_relative_to(d)), image_path.stem)
    return validation.make_view(
        name=name, image_path=image_path, width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
        world_to_camera=_world_to_camera(*frame.own("transform_matrix"), world), where=frame.where,
        intrinsics_fields=[where for _, where in fields], **extra,
    )


def _frames(meta: dict, path: Path, key: str) -> list[_Frame]:
    frames = meta.get(key, [])
    if not isinstance(frames, list):
        raise SceneError(f"{path}: '{key}' is not a list")
    return [_Frame(meta, f, path, f"{path}: {key}[{i}]") for i, f in enumerate(frames)]


def _applied_transform(meta: dict, path: Path) -> np.ndarray:
    where = f"{path}: applied_transform"
    try:
        matrix = np.asarray(meta["applied_transform"], np.float64)
    except (TypeError, ValueError):
        raise SceneError(f"{where}: not a matrix of numbers") from None
    if matrix.shape not in ((3, 4), (4, 4)) or not np.isfinite(matrix).all():
        raise SceneError(f"{where}: expected a finite 3x4 matrix, got shape {matrix.shape}")
    return matrix[:3]


def read_transforms(
    json_path: Path, *, name: str, root: Path, image_dirs: list[Path], frame_dirs: dict[str, list[Path]],
    points_path: Path, legacy_test: Path | None = None, classes: tuple[str, ...] | None = None,
) -> SceneData:
    """A scene from one transforms JSON (``frames`` and ``test_frames``), or a training JSON and the
    legacy ``legacy_test`` JSON; files are looked up below ``image_dirs`` and ``frame_dirs``."""
    meta = read_json(json_path)
    if not isinstance(meta, dict):
        raise SceneError(f"{json_path}: expected a JSON object at the top level, got {type(meta).__name__}")
    if not isinstance(meta.get("frames"), list):
        raise SceneError(f"{json_path}: missing 'frames' (a list)")
    train, test = _frames(meta, json_path, "frames"), _frames(meta, json_path, "test_frames")
    transform = None
    if legacy_test is not None:
        test_meta = read_json(legacy_test)
        if not isinstance(test_meta, dict) or not isinstance(test_meta.get("frames"), list):
            raise SceneError(f"{legacy_test}: expected a JSON object with 'frames' (a list)")
        test += _frames(test_meta, legacy_test, "frames")
        if ("applied_transform" in meta) != ("applied_transform" in test_meta) or (
                "applied_transform" in meta and meta["applied_transform"] != test_meta["applied_transform"]):
            raise SceneError(f"{json_path.parent}: applied_transform differs between {json_path.name} and {legacy_test.name}")
    if "applied_transform" in meta:
        transform = _applied_transform(meta, json_path)
    plain = transform is not None or legacy_test is not None
    world = np.eye(4) if plain else SCANNETPP_WORLD

    notes = []
    bad = {f.frame.get("file_path") for f in train + test if f.is_bad()}
    if bad:
        notes.append(f"{len(bad)} frame(s) marked is_bad left out")
    test = [f for f in test if not f.is_bad()]
    held_out = {f.frame.get("file_path") for f in test}
    doubled = [f for f in train if f.frame.get("file_path") in held_out]
    if doubled:
        notes.append(f"{len(doubled)} test frame(s) also listed in 'frames' (as the toolkit's downscale step writes them) "
                     "kept held out")
    train = [f for f in train if not f.is_bad() and f.frame.get("file_path") not in held_out]
    if not train:
        raise SceneError(f"{json_path}: frames: no training views" + (f" ({'; '.join(notes)})" if notes else ""))

    train_views = tuple(_view(f, image_dirs, frame_dirs, world) for f in train)
    test_views = tuple(_view(f, image_dirs, frame_dirs, world) for f in test)
    validation.check_unique_names(train_views + test_views, str(json_path))
    if not points_path.is_file():
        raise SceneError(f"{root}: no {points_path} (the sparse points that initialise the Gaussians)")
    xyz, rgb = colmap.read_points3d_text(points_path)
    if transform is not None:
        xyz = xyz @ transform[:, :3].T + transform[:, 3]
    other_world = ("the ScanNet++ toolkit's world frame (x and y swapped, z negated), as FiT3D's scene folders use"
                   if plain else "plain nerfstudio poses in the points' frame, without the ScanNet++ toolkit's permutation")
    validation.check_points_seen(
        train_views + test_views, xyz, rgb, points_file=points_path, poses_file=json_path, read_image=pixels.read_image,
        alternatives={other_world: lambda w2c: w2c @ SCANNETPP_WORLD,
                      "transform_matrix in OpenCV instead of OpenGL camera axes": lambda w2c: GL_TO_CV @ w2c},
    )
    return SceneData(name=name, root=root, train=train_views, test=test_views, points=xyz, point_colors=rgb,
                     classes=classes, notes=tuple(notes))


def _classes(root: Path) -> tuple[str, ...] | None:
    path = root / CLASSES_FILE
    if not path.exists():
        return None
    names = read_json(path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SceneError(f"{path}: expected a JSON list of class names (index = label id)")
    return tuple(names)


def read_scene(root: Path) -> SceneData:
    """A FiT3D scene folder (or the legacy two-file layout)."""
    legacy = root / LEGACY_TEST
    return read_transforms(
        root / TRANSFORMS, name=root.resolve().name, root=root, image_dirs=[root / "images", root],
        frame_dirs={key: [root / folder, root] for key, folder in FRAME_FILES.items()}, points_path=root / POINTS_FILE,
        legacy_test=legacy if legacy.is_file() else None, classes=_classes(root),
    )


# ---------------------------------------------------------------------------------------------
# Writer: FiT3D's scene folder


def camera_to_world_gl(world_to_camera: np.ndarray) -> np.ndarray:
    """The toolkit's ``transform_matrix`` of a COLMAP world-to-camera (convert_frames)."""
    rotation, translation = world_to_camera[:3, :3], world_to_camera[:3, 3]
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = rotation.T
    camera_to_world[:3, 3] = -rotation.T @ translation
    return SCANNETPP_WORLD @ camera_to_world @ GL_TO_CV


def _bare(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        raise SceneError(f"cannot write {folder.parent}: {path} is not inside {folder}") from None


def _frame(view: View, root: Path, intrinsics: dict | None) -> dict:
    frame = dict(intrinsics or {})
    frame["file_path"] = _bare(view.image_path, root / "images")
    frame["transform_matrix"] = camera_to_world_gl(view.world_to_camera).tolist()
    for key, folder in FRAME_FILES.items():
        if getattr(view, key) is not None:
            frame[key] = _bare(getattr(view, key), root / folder)
    return frame


def write_scene(scene: SceneData) -> None:
    """transforms_train.json (frames and test_frames), points3D.txt and (with classes) classes.json
    into ``scene.root``; the image, mask, depth and label files must already be in their folders.
    Intrinsics go to the top level when all views share them, else into each frame."""
    views = scene.train + scene.test
    intrinsics = [dict(fl_x=v.fx, fl_y=v.fy, cx=v.cx, cy=v.cy, w=v.width, h=v.height) for v in views]
    shared = all(i == intrinsics[0] for i in intrinsics)
    meta = {**(intrinsics[0] if shared else {}), "camera_model": "PINHOLE",
            "has_mask": any(v.mask_path is not None for v in views)}
    own = [None if shared else i for i in intrinsics]
    meta["frames"] = [_frame(v, scene.root, i) for v, i in zip(scene.train, own)]
    meta["test_frames"] = [_frame(v, scene.root, i) for v, i in zip(scene.test, own[len(scene.train):])]
    (scene.root / TRANSFORMS).write_text(json.dumps(meta, indent=1) + "\n")
    colmap.write_points3d_text(scene.root / POINTS_FILE, scene.points, scene.point_colors)
    if scene.classes is not None:
        (scene.root / CLASSES_FILE).write_text(json.dumps(list(scene.classes)) + "\n")
