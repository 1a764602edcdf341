"""``load_scene``: one entry point for every scene layout, validated up front; ``find_scenes``:
what a ``scenes`` setting names."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from fit3d_jax.scenes import colmap, nerfstudio, scannetpp
from fit3d_jax.scenes.pixels import file_digest, read_depth, read_image, read_labels, read_mask
from fit3d_jax.scenes.types import SceneData, SceneError, View


def is_scene_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder in a layout load_scene reads (its contents are checked there)."""
    root = Path(path)
    return root.is_dir() and (nerfstudio.is_scene(root) or scannetpp.dslr_folder(root) is not None
                              or colmap.find_model(root) is not None)


def _not_a_scene(path: Path) -> str:
    """Why a folder is not a scene, for the folder-of-scenes report."""
    hint = ""
    if (path / "transforms.json").is_file():
        hint = " (it has transforms.json, nerfstudio's name; FiT3D's scene folders have transforms_train.json)"
    elif (path / "images").is_dir():
        hint = " (it has images/ but no poses)"
    return f"{path.name}: no {nerfstudio.TRANSFORMS}, ScanNet++ {scannetpp.UNDISTORTED_JSON} or COLMAP model{hint}"


def find_scenes(spec: str, split: str = "", *, skipped: list[str] | None = None) -> list[Path]:
    """The scenes named by ``spec``: comma-separated scene folders, folders of scenes, ScanNet++
    release roots or FiT3D data roots, whose scenes are those of ``split`` (comma-separated split
    names; a FiT3D root without one: all its scenes). A folder of scenes that also holds other
    folders (hidden ones aside) is an error naming them and why, unless ``skipped`` is a list:
    then they are skipped and listed there."""
    found = []
    for entry in (p.strip() for p in spec.split(",") if p.strip()):
        path = Path(entry)
        if is_scene_dir(path):
            found.append(path)
        elif scannetpp.is_root(path) or scannetpp.is_fit3d_root(path):
            found.extend(scannetpp.split_scenes(path, split))
        elif path.is_dir() and (folders := sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))) \
                and (inside := [p for p in folders if is_scene_dir(p)]):
            others = [_not_a_scene(p) for p in folders if p not in inside]
            if others and skipped is None:
                raise SceneError(f"{path} is a folder of {len(inside)} scenes, but these folders in it are not scenes: "
                                 f"{'; '.join(others)}. Set config.skip_non_scenes=True to lift the scenes and skip them")
            found.extend(inside)
            if skipped is not None:
                skipped.extend(f"{path}/{line}" for line in others)
        else:
            raise SceneError(f"{path} is neither a scene (transforms_train.json, a ScanNet++ dslr/ folder or a COLMAP "
                             "model), a folder of scenes, a ScanNet++ release root (data/ and splits/) nor FiT3D's data "
                             "root (scenes/ and metadata/)")
    if not found:
        raise SceneError("no scenes named")
    if scannetpp.split_names(split) and not any(scannetpp.is_root(Path(e.strip())) or scannetpp.is_fit3d_root(Path(e.strip()))
                                                for e in spec.split(",") if e.strip()):
        raise SceneError(f"config.split={split!r} names splits, but {spec!r} holds no ScanNet++ release root (data/, splits/) "
                         "or FiT3D data root (scenes/, metadata/) to take them from")
    return found


def load_scene(path: str | os.PathLike, *, test_every: int = 8) -> SceneData:
    """A FiT3D scene folder or ScanNet++ ``dslr/`` folder (their own test split) or a COLMAP scene
    (``test_every``: every n-th image by name is a test view, 0 = none). Everything is checked here
    (files, sizes, poses, points against the views); a problem raises SceneError naming the file
    and field."""
    if isinstance(test_every, bool) or not isinstance(test_every, int) or test_every < 0:
        raise ValueError(f"test_every={test_every!r} must be an integer >= 0")
    root = Path(path)
    if not root.is_dir():
        raise SceneError(f"{root}: no such scene folder")
    if nerfstudio.is_scene(root):
        return nerfstudio.read_scene(root)
    if (dslr := scannetpp.dslr_folder(root)) is not None:
        return scannetpp.read_dslr(dslr)
    if colmap.find_model(root) is not None:
        return colmap.read_scene(root, test_every=test_every)
    raise SceneError(
        f"{root}: not a scene: neither {nerfstudio.TRANSFORMS}, a ScanNet++ dslr/ folder "
        f"({scannetpp.UNDISTORTED_JSON}) nor a COLMAP model ({', '.join(colmap.MODEL_FILES)} as .txt or .bin in "
        "sparse/0, sparse or the folder)"
    )


def _decode_view(view: View) -> list[str]:
    read_image(view), read_mask(view), read_depth(view), read_labels(view)
    return [file_digest(p) for p in (view.image_path, view.mask_path, view.depth_path, view.label_path) if p is not None]


def verify_pixels(scene: SceneData, workers: int = 8) -> str:
    """Decodes every image, mask, depth and label file of ``scene`` as training reads them (a bad one
    raises SceneError naming it) and returns the scene's content fingerprint: its views' cameras and
    file contents and its points, so that anything derived from the scene knows when it changed."""
    views = list(scene.train + scene.test)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # decoding releases the GIL
        digests = list(pool.map(_decode_view, views))
    summary = [[v.name, v.width, v.height, v.fx, v.fy, v.cx, v.cy, np.round(v.world_to_camera, 9).tolist(), d]
               for v, d in zip(views, digests, strict=True)]
    fingerprint = hashlib.sha256(json.dumps([len(scene.train), summary]).encode())
    fingerprint.update(np.ascontiguousarray(scene.points, np.float64).tobytes())
    fingerprint.update(np.ascontiguousarray(scene.point_colors, np.uint8).tobytes())
    return fingerprint.hexdigest()[:24]
