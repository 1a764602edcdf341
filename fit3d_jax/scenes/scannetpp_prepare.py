"""ScanNet++ prepared as FiT3D prepares it, one scene at a time: the toolkit's ``dslr/downscale.py``
and ``dslr/undistort.py`` with FiT3D's settings, then FiT3D's ``reorganize_data.py``, and optionally
the probe ground truth rendered from the mesh (``mesh_truth``) in FiT3D's evaluation layout.

The pixels are the toolkit's: the same OpenCV calls with the same parameters, in the same order,
including the JPEG written between the two steps (the toolkit's undistort reads the downscaled JPGs
back). Downscale: ``cv2.resize`` INTER_CUBIC to ``int(w / f) x int(h / f)``, intrinsics times 1 / f,
masks thresholded (< 255 -> 0). Undistort: ``cv2.fisheye.estimateNewCameraMatrixForUndistortRectify``
(balance 0) with the principal point then set to the image centre, ``initUndistortRectifyMap``
(CV_32FC1), ``remap`` INTER_LINEAR with BORDER_REFLECT_101 for images; masks stay all 255 where
nothing is masked, else remapped with a constant 255 border and thresholded.

The JSON differs from the toolkit's in one way, on purpose: its ``frames`` are the training frames
only (the toolkit's downscale step appends the test frames to them in place; the reader holds such
frames out either way).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from fit3d_jax.harness import outputs
from fit3d_jax.scenes import nerfstudio, scannetpp, validation
from fit3d_jax.scenes.types import SceneError

MARKER = ".fit3d_jax_prepared.json"  # in every scene folder this job wrote; records how
VERSION = 1


def _read(path: Path, flags: int) -> np.ndarray:
    pixels = cv2.imread(str(path), flags)
    if pixels is None:
        raise SceneError(f"{path}: missing or unreadable")
    return pixels


def _write(path: Path, pixels: np.ndarray) -> None:
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"{path}: cannot write")


def downscaled(image: np.ndarray, size: tuple[int, int], *, mask: bool) -> np.ndarray:
    """The toolkit's downscale of an image (BGR) or a mask; ``size`` = (width, height)."""
    resized = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    if mask:
        resized[resized < 255] = 0
    return resized


def undistortion(k: np.ndarray, distortion: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The new pinhole K and the two remap tables of the toolkit's fisheye undistortion."""
    new_k = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(k, distortion, (width, height), np.eye(3), balance=0.0)
    new_k[0, 2], new_k[1, 2] = width / 2.0, height / 2.0
    map1, map2 = cv2.fisheye.initUndistortRectifyMap(k, distortion, np.eye(3), new_k, (width, height), cv2.CV_32FC1)
    return new_k, map1, map2


def undistorted(image: np.ndarray, map1: np.ndarray, map2: np.ndarray, *, mask: bool) -> np.ndarray:
    if not mask:
        return cv2.remap(image, map1, map2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if np.all(image > 0):
        return np.zeros(image.shape[:2], np.uint8) + 255
    out = cv2.remap(image, map1, map2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    out[out < 255] = 0
    return out


def _jpeg_round_trip(image: np.ndarray) -> np.ndarray:
    """What the toolkit's undistort reads back from the JPG its downscale wrote."""
    ok, encoded = cv2.imencode(".JPG", image)
    if not ok:
        raise OSError("cannot encode a JPEG")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def _number(meta: dict, key: str, where: Path) -> float:
    if key not in meta:
        raise SceneError(f"{where}: missing '{key}'")
    return validation.finite_number(meta[key], f"{where}: {key}")


def read_raw_transforms(dslr: Path) -> tuple[dict, list[dict]]:
    """nerfstudio/transforms.json and the frames the toolkit processes (training frames, then the
    test frames where their images exist: the hidden test scenes have none)."""
    path = dslr / scannetpp.RAW_JSON
    meta = nerfstudio.read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise SceneError(f"{path}: expected a JSON object with a non-empty 'frames' list")
    if meta.get("camera_model") != "OPENCV_FISHEYE":
        raise SceneError(f"{path}: camera_model is {meta.get('camera_model')!r}; the DSLR release is OPENCV_FISHEYE")
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4"):
        _number(meta, key, path)
    frames = list(meta["frames"])
    tests = meta.get("test_frames") or []
    if not isinstance(tests, list):
        raise SceneError(f"{path}: 'test_frames' is not a list")
    if tests and (dslr / scannetpp.RAW_DIRS[0] / str(tests[0].get("file_path"))).is_file():
        frames += tests
    return meta, frames


def check_raw(dslr: Path) -> None:
    """Every frame the toolkit would process has its image and mask, of the JSON's size (headers only)."""
    meta, frames = read_raw_transforms(dslr)
    json_path = dslr / scannetpp.RAW_JSON
    size = (int(meta["w"]), int(meta["h"]))
    for frame in frames:
        where = f"{json_path}: frame {frame.get('file_path')!r}"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str) or not isinstance(frame.get("mask_path"), str):
            raise SceneError(f"{where}: a frame needs file_path and mask_path")
        for what, folder, key in (("image", scannetpp.RAW_DIRS[0], "file_path"), ("mask", scannetpp.RAW_DIRS[1], "mask_path")):
            actual = validation.image_size(dslr / folder / frame[key], where)
            if actual != size:
                raise SceneError(f"{where}: the {what} is {actual[0]}x{actual[1]}, but {json_path} declares w={size[0]}, h={size[1]}")


def prepare_scene(dslr: Path, out: Path, *, downscale: float, record: dict) -> dict:
    """Writes FiT3D's scene folder for the toolkit ``dslr/`` folder into ``out`` (through a staging
    folder beside it, renamed when complete); returns what it wrote."""
    meta, frames = read_raw_transforms(dslr)
    width, height = int(meta["w"]), int(meta["h"])
    k = np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1]], np.float64)
    distortion = np.array([float(meta[key]) for key in ("k1", "k2", "k3", "k4")])
    if downscale != 1:
        scale = 1 / downscale
        k = np.array([[k[0, 0] * scale, 0, k[0, 2] * scale], [0, k[1, 1] * scale, k[1, 2] * scale], [0, 0, 1]])
        width, height = int(width * scale), int(height * scale)
    new_k, map1, map2 = undistortion(k, distortion, width, height)

    with outputs.staged(out) as staging:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        for frame in frames:  # check_raw has checked the files
            image = _read(dslr / scannetpp.RAW_DIRS[0] / frame["file_path"], cv2.IMREAD_COLOR)
            mask = _read(dslr / scannetpp.RAW_DIRS[1] / frame["mask_path"], cv2.IMREAD_GRAYSCALE)
            if downscale != 1:
                image = _jpeg_round_trip(downscaled(image, (width, height), mask=False))
                mask = downscaled(mask, (width, height), mask=True)
            _write(staging / "images" / frame["file_path"], undistorted(image, map1, map2, mask=False))
            _write(staging / "masks" / frame["mask_path"], undistorted(mask, map1, map2, mask=True))
        shutil.copyfile(dslr / "colmap" / "points3D.txt", staging / nerfstudio.POINTS_FILE)
        prepared = copy.deepcopy(meta)
        prepared.update(w=width, h=height, fl_x=float(new_k[0, 0]), fl_y=float(new_k[1, 1]), cx=float(new_k[0, 2]),
                        cy=float(new_k[1, 2]), camera_model="PINHOLE")
        for key in ("k1", "k2", "k3", "k4"):
            prepared[key] = 0.0
        processed = {f["file_path"] for f in frames}
        if not all(f.get("file_path") in processed for f in prepared.get("test_frames") or []):
            prepared["test_frames"] = []  # a hidden test scene: its test images are not released
        tests = {f.get("file_path") for f in prepared.get("test_frames") or []}
        prepared["frames"] = [f for f in prepared["frames"] if f.get("file_path") not in tests]
        (staging / nerfstudio.TRANSFORMS).write_text(json.dumps(prepared, indent=4))
        report = dict(frames=len(frames), bad=sum(bool(f.get("is_bad")) for f in frames), width=width, height=height,
                      fx=float(new_k[0, 0]), fy=float(new_k[1, 1]))
        (staging / MARKER).write_text(json.dumps(record | {"report": report}, indent=1))
    return report


def marker(scene_dir: Path) -> dict | None:
    path = scene_dir / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# Probe ground truth in FiT3D's evaluation layout

SUBSETS = {"training": "scannetpp_train.txt", "validation": "scannetpp_val.txt"}


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_probe_truth(scene_dir: Path, scans: Path, eval_root: Path, subset: str, classes: tuple[str, ...]) -> dict:
    """Depth and labels of every view of the prepared scene, rendered from its mesh, into
    ``eval_root``: ``images/<subset>/<id>_<frame>.JPG``, ``annotations/<subset>/<id>_<frame>.png``
    (0 = unlabelled, 1..100 = top100.txt) and ``depth/<subset>/<id>_<frame>.png`` (uint16 mm, 0 =
    invalid); returns the depth split file's lines and coverage figures."""
    from fit3d_jax.scenes.mesh_truth import MeshTruth

    scene = nerfstudio.read_scene(scene_dir)
    truth = MeshTruth(scans, classes)
    folders = {kind: eval_root / kind / subset for kind in ("images", "annotations", "depth")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    lines, valid, labelled, pixels = [], 0, 0, 0
    for view in scene.train + scene.test:
        name = f"{scene_dir.name}_{view.name}"
        depth, labels = truth.render(view)
        _link_or_copy(view.image_path, folders["images"] / f"{name}{view.image_path.suffix}")
        _write(folders["annotations"] / f"{name}.png", labels)
        _write(folders["depth"] / f"{name}.png", np.rint(depth * 1000).astype(np.uint16))
        lines.append(f"images/{subset}/{name}{view.image_path.suffix} depth/{subset}/{name}.png")
        valid, labelled, pixels = valid + int((depth > 0).sum()), labelled + int((labels > 0).sum()), pixels + depth.size
    return dict(lines=lines, depth_valid=valid / pixels, labelled=labelled / pixels)
