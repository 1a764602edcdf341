"""Built-in rooms written as a raw ScanNet++ release, file for file as the download and the toolkit
leave it (``scenes.scannetpp`` lists the layout): fisheye DSLR JPGs with anonymisation masks, a
COLMAP text model with one OPENCV_FISHEYE camera, ``nerfstudio/transforms.json`` in the toolkit's
convention (``is_bad`` flags, ``test_frames``), ``train_test_lists.json``, the room as a mesh with
``segments.json`` / ``segments_anno.json``, the split files and ``top100.txt``.

This is the CPU fixture of the whole ScanNet++ chain: prepare (downscale, undistort, probe ground
truth from the mesh), then lift. The same room generated as a plain scene folder
(``generate_room`` with the same seed, and the undistorted intrinsics) holds the exact images, depth
and labels the prepared scene must reproduce.

Fisheye views are rendered by casting each pixel centre's ray (COLMAP's convention: pixel centres at
+0.5) through the OPENCV_FISHEYE model, so the images are exact for their camera model. Scene ids
are 10 hex digits, as ScanNet++'s, derived from the room's seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import plyfile

from fit3d_jax.harness import outputs
from fit3d_jax.scenes import colmap, nerfstudio, scannetpp
from fit3d_jax.scenes.synthetic.furniture import CLASSES
from fit3d_jax.scenes.synthetic.raycast import box_mesh
from fit3d_jax.scenes.synthetic.rooms import (
    GENERATOR_FILE,
    GENERATOR_VERSION,
    RoomParameterError,
    build_room,
    sparse_points,
    test_indices,
)
from fit3d_jax.scenes.types import View

# k1..k4 of a ScanNet++-like DSLR fisheye (barrel), and its focal length as a share of the half width.
DISTORTION = (-0.04, 0.006, -0.002, 0.0004)
FOCAL_PER_HALF_WIDTH = 1.05
ANONYMISED_EVERY = 4  # every 4th training frame has a blurred, masked-out patch, as ScanNet++'s faces and screens


def scene_id(seed: int) -> str:
    return hashlib.sha1(f"fit3d_jax room {seed}".encode()).hexdigest()[:10]


def release_parameters(*, splits: dict[str, list[int]], width: int = 1752, height: int = 1168, num_train: int = 24,
                       num_test: int = 4, num_points: int = 5000, point_noise: float = 0.01) -> dict:
    """The checked parameters of a release: ``splits`` maps a split name to its rooms' seeds;
    ``width`` x ``height`` is the size of ``resized_images`` (ScanNet++: 1752x1168)."""
    if not isinstance(splits, dict) or not splits or not all(
            isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            for seeds in splits.values()):
        raise RoomParameterError("splits", f"{splits!r} must map split names to non-empty lists of seeds >= 0")
    for field, value, low in (("width", width, 16), ("height", height, 16), ("num_train", num_train, 3), ("num_test", num_test, 1),
                              ("num_points", num_points, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise RoomParameterError(field, f"{value!r} must be an integer >= {low}")
    return dict(generator_version=GENERATOR_VERSION, splits=splits, width=width, height=height, num_train=num_train,
                num_test=num_test, num_points=num_points, point_noise=float(point_noise), distortion=list(DISTORTION))


def fisheye_rays(width: int, height: int, fx: float, fy: float, cx: float, cy: float, k) -> np.ndarray:
    """(H, W, 2) camera-space x/z and y/z of each pixel centre under OpenCV's fisheye model
    (theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)), inverted by Newton."""
    xd = (np.arange(width) + 0.5 - cx) / fx
    yd = (np.arange(height) + 0.5 - cy) / fy
    xd, yd = np.broadcast_arrays(xd[None, :], yd[:, None])
    theta_d = np.hypot(xd, yd)
    theta = theta_d.copy()
    for _ in range(30):
        t2 = theta * theta
        f = theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])))) - theta_d
        df = 1 + t2 * (3 * k[0] + t2 * (5 * k[1] + t2 * (7 * k[2] + t2 * 9 * k[3])))
        theta -= f / df
    if not (theta < np.pi / 2 - 0.05).all():
        raise RuntimeError("the fisheye sees beyond 87 degrees off axis (a generator bug)")
    scale = np.where(theta_d > 0, np.tan(theta) / np.where(theta_d > 0, theta_d, 1), 1.0)
    return np.stack([xd * scale, yd * scale], -1)


def _write_mesh(scans: Path, renderer, sid: str) -> None:
    """mesh_aligned_0.05.ply (vertex colours), segments.json (one segment per vertex, as ScanNet++'s)
    and segments_anno.json (one object per wall, floor, ceiling and furniture box; ids from 1)."""
    vertices, faces, prims, codes = box_mesh(renderer)
    material = renderer.face_material[prims, codes]
    colours = np.clip(renderer.atlases[-1][material].reshape(len(material), -1, 3).mean(1), 0, 255).astype(np.uint8)
    vertex = np.empty(len(vertices), [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = vertices[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, i]
    face = np.empty(len(faces), [("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    mesh = plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex"), plyfile.PlyElement.describe(face, "face")])
    mesh.write(str(scans / scannetpp.MESH.name))
    (scans / scannetpp.SEGMENTS.name).write_text(json.dumps({"sceneId": sid, "segIndices": list(range(len(vertices)))}))
    groups = {}
    for v, (k, code) in enumerate(zip(prims, codes)):
        key = (int(k), int(code) if k == 0 else 0)  # the room: one object per face; a box: one object
        groups.setdefault(key, []).append(v)
    seg_groups = []
    for object_id, ((k, code), members) in enumerate(sorted(groups.items()), start=1):
        points = vertices[members]
        seg_groups.append({
            "id": object_id, "objectId": object_id, "label": CLASSES[renderer.face_label[k, code]], "segments": members,
            "obb": {"centroid": points.mean(0).tolist(), "axesLengths": (points.max(0) - points.min(0)).tolist(),
                    "normalizedAxes": np.eye(3).ravel().tolist()},
        })
    (scans / scannetpp.ANNOTATIONS.name).write_text(json.dumps({"sceneId": sid, "segGroups": seg_groups}, indent=1))


def _write_scene(dslr: Path, seed: int, params: dict) -> None:
    width, height = params["width"], params["height"]
    count = params["num_train"] + params["num_test"]
    renderer, poses = build_room(seed, count)
    fx = fy = FOCAL_PER_HALF_WIDTH * width / 2
    cx, cy = width / 2 + 0.7, height / 2 - 0.4  # a real calibration is a little off centre
    k = params["distortion"]
    rays = fisheye_rays(width, height, fx, fy, cx, cy, k)
    images_dir, masks_dir = dslr / scannetpp.RAW_DIRS[0], dslr / scannetpp.RAW_DIRS[1]
    for folder in (images_dir, masks_dir, dslr / "colmap", dslr / "nerfstudio"):
        folder.mkdir(parents=True)
    held_out = test_indices(count, params["num_test"])
    names = [f"DSC{k + 1:05d}.JPG" for k in range(count)]
    train_names = [n for i, n in enumerate(names) if i not in held_out]
    bad = {train_names[1]}
    anonymised = set(train_names[::ANONYMISED_EVERY])
    views, renders = [], []
    for name, pose in zip(names, poses):
        view = View(name=Path(name).stem, image_path=images_dir / name, width=width, height=height, fx=fx, fy=fy, cx=cx,
                    cy=cy, world_to_camera=pose)
        image, depth, _ = renderer.render(view, rays)
        mask = np.full((height, width), 255, np.uint8)
        if name in anonymised:
            patch = (slice(height // 3, height // 2), slice(width // 3, width // 2))
            image[patch] = cv2.GaussianBlur(image, (0, 0), 3)[patch]
            mask[patch] = 0
        if not cv2.imwrite(str(view.image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)) or \
                not cv2.imwrite(str(masks_dir / name.replace(".JPG", ".png")), mask):
            raise OSError(f"{dslr}: cannot write {name}")
        views.append(view)
        renders.append((image, depth))
    train = [i for i in range(count) if i not in held_out]
    xyz, rgb = sparse_points(np.random.default_rng([seed, 2]), [views[i] for i in train], [renders[i] for i in train],
                             [rays] * len(train), params["num_points"], params["point_noise"])

    colmap.write_cameras_text(dslr / "colmap" / "cameras.txt", [(1, "OPENCV_FISHEYE", width, height, (fx, fy, cx, cy, *k))])
    colmap.write_images_text(dslr / "colmap" / "images.txt", [
        colmap.ColmapImage(i + 1, colmap.rotation_to_qvec(v.world_to_camera[:3, :3]), v.world_to_camera[:3, 3], 1, v.image_path.name)
        for i, v in enumerate(views)])
    colmap.write_points3d_text(dslr / "colmap" / "points3D.txt", xyz, rgb)

    def frame(view: View) -> dict:
        name = view.image_path.name
        return {"file_path": name, "transform_matrix": nerfstudio.camera_to_world_gl(view.world_to_camera).tolist(),
                "mask_path": name.replace(".JPG", ".png"), "is_bad": name in bad}

    transforms = {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": width, "h": height, "k1": k[0], "k2": k[1], "k3": k[2],
                  "k4": k[3], "camera_model": "OPENCV_FISHEYE", "has_mask": True,
                  "frames": [frame(views[i]) for i in train], "test_frames": [frame(views[i]) for i in sorted(held_out)]}
    (dslr / scannetpp.RAW_JSON).write_text(json.dumps(transforms, indent=4))
    (dslr / scannetpp.TRAIN_TEST_LISTS).write_text(json.dumps(
        {"train": train_names, "test": [names[i] for i in sorted(held_out)]}, indent=4))
    scans = dslr.parent / "scans"
    scans.mkdir()
    _write_mesh(scans, renderer, dslr.parent.name)


def generate_release(root: str | os.PathLike, *, overwrite: bool = False, **parameters) -> Path:
    """Writes a raw ScanNet++ release of built-in rooms into ``root`` (parameters: ``release_parameters``)
    and returns it. It appears only when complete; an existing ``root`` must be a generated release
    and is replaced only with ``overwrite``."""
    params = release_parameters(**parameters)
    root = Path(root)
    marker = root / GENERATOR_FILE
    if root.exists():
        if not marker.is_file():
            raise FileExistsError(f"{root} exists and is not a generated release (no {GENERATOR_FILE}); not replacing it")
        if json.loads(marker.read_text()) == params:
            return root
        if not overwrite:
            raise FileExistsError(f"{root} holds a release generated with other parameters; remove it, choose another folder or overwrite")
    with outputs.staged(root) as staging:
        for split, seeds in params["splits"].items():
            (staging / scannetpp.SPLITS_DIR).mkdir(parents=True, exist_ok=True)
            (staging / scannetpp.SPLITS_DIR / f"{split}.txt").write_text("".join(f"{scene_id(s)}\n" for s in seeds))
            for seed in seeds:
                _write_scene(staging / scannetpp.DATA_DIR / scene_id(seed) / "dslr", seed, params)
        (staging / scannetpp.CLASSES_FILE).parent.mkdir(parents=True)
        (staging / scannetpp.CLASSES_FILE).write_text("\n".join(scannetpp.TOP100) + "\n")
        (staging / GENERATOR_FILE).write_text(json.dumps(params, indent=1) + "\n")
    return root
