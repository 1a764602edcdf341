"""``load_scene``: one entry point for every scene layout, validated up front; ``find_scenes``:
what a ``scenes`` setting names."""

from __future__ import annotations

import os
from pathlib import Path

from fit3d_jax.scenes import colmap, nerfstudio, scannetpp
from fit3d_jax.scenes.types import SceneData, SceneError


def is_scene_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder in a layout load_scene reads (its contents are checked there)."""
    root = Path(path)
    return root.is_dir() and (nerfstudio.is_scene(root) or scannetpp.dslr_folder(root) is not None
                              or colmap.find_model(root) is not None)


def find_scenes(spec: str, split: str = "") -> list[Path]:
    """The scenes named by ``spec``: comma-separated scene folders, folders of scenes, ScanNet++
    release roots or FiT3D data roots, whose scenes are those of ``split`` (comma-separated split
    names; a FiT3D root without one: all its scenes)."""
    found = []
    for entry in (p.strip() for p in spec.split(",") if p.strip()):
        path = Path(entry)
        if is_scene_dir(path):
            found.append(path)
        elif scannetpp.is_root(path) or scannetpp.is_fit3d_root(path):
            found.extend(scannetpp.split_scenes(path, split))
        elif path.is_dir() and (inside := sorted(p for p in path.iterdir() if is_scene_dir(p))):
            found.extend(inside)
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
