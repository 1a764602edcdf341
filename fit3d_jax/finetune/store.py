"""The stage I store, read back for stage II: per scene the rendering parameters of its feature
Gaussians, its decoder and its training views (``<lift output>/store/<scene>.npz`` + ``.json``,
written by ``fit3d_jax.lift.export.write_store_entry``). All of it stays in host memory."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from fit3d_jax.scenes import SceneError, validation
from fit3d_jax.scenes.pixels import file_digest

ARRAYS = ("means", "scales", "quats", "opacities", "features", "decoder")


@dataclasses.dataclass(frozen=True)
class StoredView:
    image: Path
    mask: Path | None
    width: int
    height: int
    intrinsics: tuple[float, float, float, float]  # fx fy cx cy
    world_to_camera: np.ndarray  # (4, 4)
    image_digest: str | None = None  # sha256 of the image file the lift saw (None: not recorded)
    mask_digest: str | None = None


@dataclasses.dataclass(frozen=True)
class StoredScene:
    name: str
    means: np.ndarray  # (N, 3)
    scales: np.ndarray  # (N, 3) activated
    quats: np.ndarray  # (N, 4) unit
    opacities: np.ndarray  # (N,) activated
    features: np.ndarray  # (N, F)
    decoder: np.ndarray  # (3, 3, F, D) convolution kernel
    views: tuple[StoredView, ...]  # training views: the samples of stage II
    test_views: tuple[StoredView, ...] = ()  # held out: for visualisations
    weights: dict | None = None  # the lifted weights' fingerprint and description (None: not recorded)

    @property
    def num_gaussians(self) -> int:
        return len(self.means)

    @property
    def target_dim(self) -> int:
        return self.decoder.shape[-1]


def _view(entry: dict, where: str) -> StoredView:
    """One stored view, checked as a scene reader checks it: the image there with the recorded
    size, plausible intrinsics, a finite rigid pose."""
    try:
        image = Path(entry["image"])
        width = validation.positive_int(entry["width"], f"{where} width")
        height = validation.positive_int(entry["height"], f"{where} height")
        fx, fy, cx, cy = (validation.finite_number(entry[k], f"{where} {k}") for k in ("fx", "fy", "cx", "cy"))
        validation.check_intrinsics(width, height, fx, fy, cx, cy, [f"{where} {k}" for k in ("fx", "fy", "cx", "cy")])
        pose = np.asarray(entry["world_to_camera"], np.float64).reshape(4, 4)
        if not np.array_equal(pose[3], [0, 0, 0, 1]):
            raise SceneError(f"{where} world_to_camera: last row is {pose[3].tolist()}, not [0, 0, 0, 1]")
        validation.rigid_world_to_camera(pose[:3, :3], pose[:3, 3], f"{where} world_to_camera")
        validation.check_image_file(image, width, height, f"{where} image")
        mask = Path(entry["mask"]) if entry.get("mask") else None
        if mask is not None:
            validation.check_image_file(mask, width, height, f"{where} mask")
        return StoredView(image=image, mask=mask, width=width, height=height, intrinsics=(fx, fy, cx, cy), world_to_camera=pose,
                          image_digest=entry.get("image_digest"), mask_digest=entry.get("mask_digest"))
    except SceneError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise SceneError(f"{where}: malformed view entry ({e!r})") from None


def load_store(store_dir: str | Path) -> list[StoredScene]:
    """Every scene of a store directory, sorted by name; malformed entries name the file."""
    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        raise SceneError(f"{store_dir}: no such store directory (run the lift job first)")
    scenes = []
    for npz_path in sorted(store_dir.glob("*.npz")):
        if ".tmp" in npz_path.name:
            continue
        json_path = npz_path.with_suffix(".json")
        if not json_path.exists():
            raise SceneError(f"{json_path}: missing (every store .npz has a .json with its views)")
        try:
            with np.load(npz_path) as data:
                missing = [k for k in ARRAYS if k not in data.files]
                if missing:
                    raise SceneError(f"{npz_path}: missing arrays {missing}")
                arrays = {k: np.asarray(data[k], np.float32) for k in ARRAYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise SceneError(f"{npz_path}: damaged or truncated store entry ({type(e).__name__}: {e}); lift the scene again") from None
        for name, array in arrays.items():
            if not np.isfinite(array).all():
                raise SceneError(f"{npz_path}: scene {npz_path.stem!r} holds {int((~np.isfinite(array)).sum())} non-finite "
                                 f"values in {name!r}; its lift diverged: lift it again")
        try:
            entry = json.loads(json_path.read_text())
            views = tuple(_view(e, f"{json_path} views[{i}]") for i, e in enumerate(entry["views"]))
            test_views = tuple(_view(e, f"{json_path} test_views[{i}]") for i, e in enumerate(entry.get("test_views", [])))
            weights = entry.get("weights")
            if weights is not None and not (isinstance(weights, dict) and isinstance(weights.get("fingerprint"), str)):
                raise TypeError(f"'weights' is {weights!r}, not a record with a 'fingerprint'")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SceneError(f"{json_path}: malformed ({e!r})") from None
        if not views:
            raise SceneError(f"{json_path}: no training views")
        if arrays["decoder"].shape[2] != arrays["features"].shape[1]:
            raise SceneError(f"{npz_path}: decoder input {arrays['decoder'].shape[2]} != feature dim {arrays['features'].shape[1]}")
        scenes.append(StoredScene(name=npz_path.stem, views=views, test_views=test_views, weights=weights, **arrays))
    if not scenes:
        per_backbone = sorted(d.name for d in store_dir.iterdir() if d.is_dir() and any(d.glob("*.npz")))
        if per_backbone:
            raise SceneError(f"{store_dir} holds the stores of a multi-backbone lift ({', '.join(per_backbone)}): pass one of "
                             f"them, e.g. {store_dir / per_backbone[0]}, with the weights of that backbone")
        raise SceneError(f"{store_dir}: no scenes in the store")
    dims = {s.target_dim for s in scenes}
    if len(dims) > 1:
        raise SceneError(f"{store_dir}: scenes decode to different feature dimensions {sorted(dims)}")
    lifted = {(s.weights or {}).get("fingerprint") for s in scenes}
    if len(lifted) > 1:
        by = {f: [s.name for s in scenes if (s.weights or {}).get("fingerprint") == f] for f in lifted}
        raise SceneError(f"{store_dir}: scenes were lifted from different weights ("
                         + "; ".join(f"{f or 'not recorded'}: {', '.join(names[:3])}" for f, names in by.items())
                         + "); a store holds one backbone's scenes (a multi-backbone lift writes store/<name>/)")
    return scenes


def check_weights(scenes: list[StoredScene], fingerprint: str, description: str) -> None:
    """Raises SceneError unless the store's scenes were lifted from the weights with
    ``fingerprint``: stage II trains the model to reproduce those features, not another's."""
    lifted = scenes[0].weights
    if lifted is None:
        raise SceneError(f"scene {scenes[0].name!r} has no record of the weights it was lifted from (a store written before "
                         "that record existed); lift the scenes again")
    if lifted["fingerprint"] != fingerprint:
        raise SceneError(f"the store was lifted from other weights: {lifted.get('description', '?')} (fingerprint "
                         f"{lifted['fingerprint']}), not {description} (fingerprint {fingerprint}); pass the weights it was "
                         "lifted from, or the store of these weights (a multi-backbone lift writes one per backbone, store/<name>/)")


def store_fingerprint(store_dir: str | Path) -> str:
    """What a fine-tuning run's checkpoints record of its store: every entry's name, its views
    (the .json) and its arrays' file size; a re-lifted scene changes it."""
    digest = hashlib.sha256()
    for npz_path in sorted(Path(store_dir).glob("*.npz")):
        if ".tmp" not in npz_path.name:
            digest.update(f"{npz_path.name}:{npz_path.stat().st_size}:".encode())
            digest.update(npz_path.with_suffix(".json").read_bytes())
    return digest.hexdigest()[:24]


def check_images(scenes: list[StoredScene], workers: int = 16) -> int:
    """Raises SceneError unless every stored view's image (and mask) holds the content the lift saw
    (the digests its store entry recorded): features lifted from other pixels are not the images'.
    Returns how many files were read."""
    files = [(path, digest, f"scene {s.name!r} view {i} {what}")
             for s in scenes for i, v in enumerate(s.views + s.test_views)
             for path, digest, what in ((v.image, v.image_digest, "image"), (v.mask, v.mask_digest, "mask")) if path is not None]
    missing = next((where for path, digest, where in files if digest is None), None)
    if missing is not None:
        raise SceneError(f"{missing}: no record of the file's content (a store written before the record existed); lift the "
                         "scene again")
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # hashing releases the GIL
        found = list(pool.map(lambda f: file_digest(f[0]), files))
    for (path, digest, where), now in zip(files, found):
        if now != digest:
            raise SceneError(f"{path}: changed since the lift ({where}): its features were lifted from other pixels; lift "
                             f"the scene again (or restore the file)")
    return len(files)
