"""COLMAP sparse models: text and binary readers, text writers, and COLMAP scene folders.

A COLMAP scene is a folder with the images in ``images/`` and a model (cameras, images, points3D,
all ``.bin`` or all ``.txt``) in ``sparse/0/``, ``sparse/`` or the folder itself. Optional masks
follow COLMAP's convention: ``masks/<image name>.png``. Only undistorted pinhole cameras are
accepted (run ``colmap image_undistorter`` first). COLMAP's image coordinates put the centre of
the top-left pixel at (0.5, 0.5) and its poses are OpenCV world-to-camera, as View's.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from fit3d_jax.scenes import pixels, validation
from fit3d_jax.scenes.types import SceneData, SceneError, View

# COLMAP's camera models by id: (name, number of parameters).
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_PARAMS = {name: count for name, count in CAMERA_MODELS.values()}
MODEL_FILES = ("cameras", "images", "points3D")
# |q| may deviate this much from 1 (rounding); more means the file is not a pose.
QUATERNION_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class PinholeCamera:
    camera_id: int
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float


@dataclasses.dataclass(frozen=True)
class ColmapImage:
    image_id: int
    qvec: np.ndarray  # (4,) w, x, y, z: world-to-camera rotation
    tvec: np.ndarray  # (3,) world-to-camera translation
    camera_id: int
    name: str  # path below the image folder
    source: str = ""  # where it was read ("images.txt:7"), for error messages


def qvec_to_rotation(qvec: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(qvec, np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotation_to_qvec(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w >= 0) of a rotation matrix, through the largest of the four components
    (stable for every rotation)."""
    r = np.asarray(rotation, np.float64)
    trace = np.trace(r)
    squares = np.array([1 + trace, 1 + 2 * r[0, 0] - trace, 1 + 2 * r[1, 1] - trace, 1 + 2 * r[2, 2] - trace])
    k = int(np.argmax(squares))
    big = 0.5 * np.sqrt(squares[k])
    cross = {  # 4 * (products of the largest component with the others)
        0: (r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]),
        1: (r[2, 1] - r[1, 2], r[0, 1] + r[1, 0], r[0, 2] + r[2, 0]),
        2: (r[0, 2] - r[2, 0], r[0, 1] + r[1, 0], r[1, 2] + r[2, 1]),
        3: (r[1, 0] - r[0, 1], r[0, 2] + r[2, 0], r[1, 2] + r[2, 1]),
    }[k]
    others = [c / (4 * big) for c in cross]
    q = np.empty(4)
    q[k] = big
    q[[i for i in range(4) if i != k]] = others
    return q if q[0] >= 0 else -q


def _pinhole(camera_id: int, model: str, width: int, height: int, params: Sequence[float], where: str) -> PinholeCamera:
    """``where``: the file, line (text) and camera id."""
    if model not in ("PINHOLE", "SIMPLE_PINHOLE"):
        raise SceneError(
            f"{where}: model {model} is not supported: use undistorted PINHOLE / SIMPLE_PINHOLE cameras "
            "(`colmap image_undistorter`)"
        )
    width = validation.positive_int(width, f"{where}: WIDTH")
    height = validation.positive_int(height, f"{where}: HEIGHT")
    names = ("f", "cx", "cy") if model == "SIMPLE_PINHOLE" else ("fx", "fy", "cx", "cy")
    values = [validation.finite_number(p, f"{where}: {name}") for name, p in zip(names, params)]
    for name, value in zip(names, values):
        if name.startswith("f") and value <= 0:
            raise SceneError(f"{where}: focal length {name}={value} must be > 0")
    if model == "SIMPLE_PINHOLE":
        values.insert(0, values[0])
    return PinholeCamera(camera_id, width, height, *values)


# ---------------------------------------------------------------------------------------------
# Text files


def _data_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of every line that is not a comment."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SceneError(f"{path}: cannot read ({e})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.lstrip().startswith("#"):
            yield number, line.strip()


def _parse(kind, token: str, where: str):
    try:
        return kind(token)
    except ValueError:
        raise SceneError(f"{where}: {token!r} is not {'an integer' if kind is int else 'a number'}") from None


def read_cameras_text(path: Path) -> dict[int, PinholeCamera]:
    """``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`` per line."""
    cameras = {}
    for number, line in _data_lines(path):
        if not line:
            continue
        where = f"{path}:{number}"
        tokens = line.split()
        if len(tokens) < 4:
            raise SceneError(f"{where}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got {line!r}")
        camera_id = _parse(int, tokens[0], f"{where}: CAMERA_ID")
        model = tokens[1]
        if model not in MODEL_PARAMS:
            raise SceneError(f"{where}: unknown camera model {model!r}")
        params = [_parse(float, t, f"{where}: PARAMS") for t in tokens[4:]]
        if len(params) != MODEL_PARAMS[model]:
            raise SceneError(f"{where}: model {model} takes {MODEL_PARAMS[model]} parameters, got {len(params)}")
        width, height = (_parse(int, t, f"{where}: {n}") for t, n in zip(tokens[2:4], ("WIDTH", "HEIGHT")))
        if camera_id in cameras:
            raise SceneError(f"{where}: camera {camera_id} is defined twice")
        cameras[camera_id] = _pinhole(camera_id, model, width, height, params, f"{where}: camera {camera_id}")
    return cameras


def read_images_text(path: Path) -> list[ColmapImage]:
    """Two lines per image: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and its 2D points
    (possibly an empty line), which are not needed here but are checked to be (X, Y, POINT3D_ID)
    triples so that a missing points line cannot swallow the next image."""
    images = []
    lines = _data_lines(path)
    for number, line in lines:
        if not line:  # blank lines between records
            continue
        where = f"{path}:{number}"
        tokens = line.split(maxsplit=9)
        if len(tokens) < 10:
            raise SceneError(f"{where}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got {line!r}")
        values = [_parse(float, t, f"{where}: {n}") for t, n in zip(tokens[1:8], ("QW", "QX", "QY", "QZ", "TX", "TY", "TZ"))]
        image_id = _parse(int, tokens[0], f"{where}: IMAGE_ID")
        images.append(ColmapImage(
            image_id=image_id,
            qvec=np.array(values[:4]),
            tvec=np.array(values[4:]),
            camera_id=_parse(int, tokens[8], f"{where}: CAMERA_ID"),
            name=tokens[9],
            source=where,
        ))
        points_number, points_line = next(lines, (number + 1, ""))
        points = points_line.split()
        if len(points) % 3 or not all(_is_number(t) for t in points[:3]):
            raise SceneError(
                f"{path}:{points_number}: expected the POINTS2D[] line of image {image_id} (X Y POINT3D_ID triples, "
                f"possibly empty), got {points_line[:80]!r}"
            )
    return images


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_points3d_text(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``POINT3D_ID X Y Z R G B ERROR TRACK[]`` per line -> (P, 3) float64 positions, (P, 3) uint8 colours."""
    xyz, rgb = [], []
    for number, line in _data_lines(path):
        if not line:
            continue
        where = f"{path}:{number}"
        tokens = line.split()
        if len(tokens) < 8:
            raise SceneError(f"{where}: expected POINT3D_ID X Y Z R G B ERROR TRACK[], got {line!r}")
        _parse(int, tokens[0], f"{where}: POINT3D_ID")
        xyz.append([validation.finite_number(_parse(float, t, f"{where}: {n}"), f"{where}: {n}")
                    for t, n in zip(tokens[1:4], "XYZ")])
        colour = [_parse(int, t, f"{where}: {n}") for t, n in zip(tokens[4:7], "RGB")]
        if not all(0 <= c <= 255 for c in colour):
            raise SceneError(f"{where}: colour {colour} is outside 0..255")
        rgb.append(colour)
    return _points(xyz, rgb, path)


def _points(xyz: list, rgb: list, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not xyz:
        raise SceneError(f"{path}: no points (the sparse points initialise the Gaussians)")
    return np.asarray(xyz, np.float64).reshape(-1, 3), np.asarray(rgb, np.uint8).reshape(-1, 3)


def _number(x) -> str:
    return repr(float(x))  # shortest text that reads back to the same float


def write_cameras_text(path: Path, cameras: Sequence[tuple[int, str, int, int, Sequence[float]]]) -> None:
    """One line per (CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS)."""
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    for camera_id, model, width, height, params in cameras:
        if len(params) != MODEL_PARAMS[model]:
            raise ValueError(f"camera {camera_id}: {model} takes {MODEL_PARAMS[model]} parameters, got {len(params)}")
        lines.append(f"{camera_id} {model} {width} {height} {' '.join(map(_number, params))}")
    path.write_text("\n".join(lines) + "\n")


def write_images_text(path: Path, images: Sequence[ColmapImage]) -> None:
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for im in images:
        pose = " ".join(map(_number, (*im.qvec, *im.tvec)))
        lines += [f"{im.image_id} {pose} {im.camera_id} {im.name}", ""]
    path.write_text("\n".join(lines) + "\n")


def write_points3d_text(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Error 0 and empty tracks: the points carry no observations."""
    lines = ["# 3D point list with one line of data per point:", "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]"]
    for i, (p, c) in enumerate(zip(np.asarray(xyz, np.float64), np.asarray(rgb, np.uint8)), start=1):
        lines.append(f"{i} {' '.join(map(_number, p))} {c[0]} {c[1]} {c[2]} 0")
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Binary files (little-endian, as COLMAP writes them)


class _Reader:
    def __init__(self, path: Path):
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise SceneError(f"{path}: cannot read ({e})") from None
        self.path, self.pos = path, 0

    def take(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise SceneError(f"{self.path}: truncated at byte {self.pos} while reading {what}")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def skip(self, size: int, what: str) -> None:
        if self.pos + size > len(self.data):
            raise SceneError(f"{self.path}: truncated at byte {self.pos} while reading {what}")
        self.pos += size

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise SceneError(f"{self.path}: truncated at byte {self.pos} while reading {what}")
        text = self.data[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return text

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise SceneError(f"{self.path}: {len(self.data) - self.pos} unexpected bytes after the last record")


def read_cameras_binary(path: Path) -> dict[int, PinholeCamera]:
    reader = _Reader(path)
    cameras = {}
    (count,) = reader.take("Q", "the camera count")
    for k in range(count):
        camera_id, model_id, width, height = reader.take("iiQQ", f"camera record {k}")
        if model_id not in CAMERA_MODELS:
            raise SceneError(f"{path}: camera {camera_id} has unknown model id {model_id}")
        model, num_params = CAMERA_MODELS[model_id]
        params = reader.take("d" * num_params, f"the parameters of camera {camera_id}")
        cameras[camera_id] = _pinhole(camera_id, model, width, height, params, f"{path}: camera {camera_id}")
    reader.finish()
    return cameras


def read_images_binary(path: Path) -> list[ColmapImage]:
    reader = _Reader(path)
    images = []
    (count,) = reader.take("Q", "the image count")
    for k in range(count):
        image_id, *pose, camera_id = reader.take("i7di", f"image record {k}")
        name = reader.name(f"the name of image {image_id}")
        (num_points,) = reader.take("Q", f"the 2D point count of image {image_id}")
        reader.skip(24 * num_points, f"the 2D points of image {image_id}")  # x, y (double), point3D id (int64)
        images.append(ColmapImage(image_id, np.array(pose[:4]), np.array(pose[4:]), camera_id, name, f"{path}: image {image_id}"))
    reader.finish()
    return images


def read_points3d_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    reader = _Reader(path)
    xyz, rgb = [], []
    (count,) = reader.take("Q", "the point count")
    for k in range(count):
        point_id, x, y, z, r, g, b, _error, track_length = reader.take("Q3d3BdQ", f"point record {k}")
        reader.skip(8 * track_length, f"the track of point {point_id}")  # (image id, point2D index) int32 pairs
        validation.finite_number(x + y + z, f"{path}: point {point_id}: X Y Z")
        xyz.append((x, y, z))
        rgb.append((r, g, b))
    reader.finish()
    return _points(xyz, rgb, path)


# ---------------------------------------------------------------------------------------------
# Models and scenes

READERS = {
    "bin": (read_cameras_binary, read_images_binary, read_points3d_binary),
    "txt": (read_cameras_text, read_images_text, read_points3d_text),
}


def model_format(folder: Path) -> str | None:
    """'bin' or 'txt' where all three model files of that format are in ``folder`` (binary first,
    as COLMAP and 3DGS read it), else None."""
    for ext in READERS:
        if all((folder / f"{name}.{ext}").is_file() for name in MODEL_FILES):
            return ext
    return None


def find_model(root: Path) -> Path | None:
    for folder in (root / "sparse" / "0", root / "sparse", root):
        if model_format(folder):
            return folder
    return None


def read_model(folder: Path) -> tuple[dict[int, PinholeCamera], list[ColmapImage], np.ndarray, np.ndarray]:
    """cameras by id, images, point positions, point colours."""
    ext = model_format(folder)
    if ext is None:
        raise SceneError(f"{folder}: no complete COLMAP model ({', '.join(MODEL_FILES)} as .bin or .txt)")
    read_cameras, read_images, read_points = READERS[ext]
    cameras = read_cameras(folder / f"cameras.{ext}")
    images = read_images(folder / f"images.{ext}")
    xyz, rgb = read_points(folder / f"points3D.{ext}")
    return cameras, images, xyz, rgb


def _view(image: ColmapImage, cameras: dict[int, PinholeCamera], image_dir: Path, mask_dir: Path | None) -> View:
    if image.camera_id not in cameras:
        raise SceneError(f"{image.source}: CAMERA_ID {image.camera_id} is not in the cameras file")
    camera = cameras[image.camera_id]
    qvec = np.asarray(image.qvec, np.float64)
    norm = np.linalg.norm(qvec)
    if not np.isfinite(qvec).all() or abs(norm - 1) > QUATERNION_TOLERANCE:
        raise SceneError(f"{image.source}: QW QX QY QZ = {qvec.tolist()} is not a unit quaternion")
    image_path = image_dir / image.name
    return validation.make_view(
        name=validation.view_name(image_path, image_dir),
        image_path=image_path,
        width=camera.width, height=camera.height, fx=camera.fx, fy=camera.fy, cx=camera.cx, cy=camera.cy,
        world_to_camera=validation.rigid_world_to_camera(qvec_to_rotation(qvec), image.tvec, image.source),
        mask_path=None if mask_dir is None else mask_dir / f"{image.name}.png",
        where=f"{image.source} ({image.name})",
    )


def read_scene(root: Path, *, test_every: int = 8) -> SceneData:
    """Every ``test_every``-th image by name (the first, the 9th, ... as 3DGS's llffhold) is a test
    view; 0 = no test views."""
    folder = find_model(root)
    if folder is None:
        raise SceneError(f"{root}: no COLMAP model in sparse/0, sparse or the folder itself")
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise SceneError(f"{root}: no images/ folder next to the COLMAP model {folder}")
    mask_dir = root / "masks" if (root / "masks").is_dir() else None
    cameras, images, xyz, rgb = read_model(folder)
    if not images:
        raise SceneError(f"{folder}: the images file lists no images")
    views = [_view(image, cameras, image_dir, mask_dir) for image in sorted(images, key=lambda im: im.name)]
    validation.check_unique_names(views, str(folder))
    test = tuple(v for i, v in enumerate(views) if test_every and i % test_every == 0)
    train = tuple(v for i, v in enumerate(views) if not (test_every and i % test_every == 0))
    if not train:
        raise SceneError(f"{folder}: empty train split: test_every={test_every} makes all {len(views)} images test views")
    ext = model_format(folder)
    validation.check_points_seen(views, xyz, rgb, points_file=folder / f"points3D.{ext}", poses_file=folder / f"images.{ext}",
                                 read_image=pixels.read_image)
    return SceneData(name=root.resolve().name, root=root, train=train, test=test, points=xyz, point_colors=rgb)


def write_text_model(folder: Path, views: Sequence[View], image_dir: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """cameras.txt / images.txt / points3D.txt for ``views`` (one camera per distinct intrinsics;
    image names relative to ``image_dir``)."""
    folder.mkdir(parents=True, exist_ok=True)
    cameras: dict[tuple, PinholeCamera] = {}
    images = []
    for image_id, view in enumerate(views, start=1):
        key = (view.width, view.height, view.fx, view.fy, view.cx, view.cy)
        camera = cameras.setdefault(key, PinholeCamera(len(cameras) + 1, *key))
        rotation, translation = view.world_to_camera[:3, :3], view.world_to_camera[:3, 3]
        name = view.image_path.relative_to(image_dir).as_posix()
        images.append(ColmapImage(image_id, rotation_to_qvec(rotation), translation, camera.camera_id, name))
    write_cameras_text(folder / "cameras.txt", [(c.camera_id, "PINHOLE", c.width, c.height, (c.fx, c.fy, c.cx, c.cy))
                                                for c in cameras.values()])
    write_images_text(folder / "images.txt", images)
    write_points3d_text(folder / "points3D.txt", xyz, rgb)
