"""Scene loading: hand-written FiT3D scene folders (the ScanNet++ toolkit's JSON convention), the
legacy two-file and nerfstudio readings, COLMAP (text and binary) scenes, every bad input raising a
SceneError that names the file and field, the points-seen check, and the per-view pixel readers."""

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from fit3d_jax.scenes import SceneError, colmap, is_scene_dir, load_scene, read_depth, read_image, read_labels, read_mask

W, H = 48, 32
FX, FY, CX, CY = 40.0, 42.0, 23.5, 16.25

# A camera at CENTRE looking along world +x with world +z up, as a COLMAP world-to-camera (OpenCV
# axes: x right = world -y, y down = world -z, z forward = world +x).
CENTRE = np.array([1.0, 2.0, 0.5])
ALONG_X = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def write_image(path: Path, width: int = W, height: int = H, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def project(view, world_point) -> tuple[float, float, float]:
    """(u, v, depth) of a world point, pixel centres at +0.5 (the convention View documents)."""
    p = view.world_to_camera @ np.append(world_point, 1.0)
    return view.fx * p[0] / p[2] + view.cx, view.fy * p[1] / p[2] + view.cy, p[2]


def world_to_camera(angle: float = 0.0, centre=CENTRE) -> np.ndarray:
    """The camera at ``centre`` turned by ``angle`` about world z (left for positive angles)."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = ALONG_X @ np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rotation, -rotation @ centre
    return w2c


def toolkit_transform(w2c: np.ndarray) -> np.ndarray:
    """``transform_matrix`` as the ScanNet++ toolkit writes it (common/utils/nerfstudio.py, convert_frames)."""
    c2w = np.linalg.inv(w2c)
    c2w[0:3, 1:3] *= -1
    c2w = c2w[np.array([1, 0, 2, 3]), :]
    c2w[2, :] *= -1
    return c2w


def plain_transform(w2c: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world in the points' own frame (nerfstudio without the toolkit's permutation)."""
    return np.linalg.inv(w2c) @ np.diag([1.0, -1.0, -1.0, 1.0])


# Six points 2 m ahead of the cameras (all views see them; too few for the colour check).
POINTS = CENTRE + np.array([[2.0, dy, dz] for dy in (-0.2, 0.0, 0.2) for dz in (-0.1, 0.1)])
POINT_COLOURS = np.arange(18).reshape(6, 3) * 10
POINTS_TXT = "# 3D point list with one line of data per point:\n#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
POINTS_TXT += "".join(f"{i + 1} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {c[0]} {c[1]} {c[2]} 0.7{' 1 3 2 8' if i == 0 else ''}\n"
                      for i, (p, c) in enumerate(zip(POINTS, POINT_COLOURS)))
POSES = {"a": world_to_camera(), "b": world_to_camera(0.2), "c": world_to_camera(-0.2)}


def fit3d_meta(transform=toolkit_transform) -> dict:
    """FiT3D's transforms_train.json as the toolkit writes it (undistorted: PINHOLE, k's zeroed),
    with a per-frame intrinsics override."""
    frame = lambda name, file, **extra: {"file_path": file, "transform_matrix": transform(POSES[name]).tolist(), **extra}
    return {
        "fl_x": FX, "fl_y": FY, "cx": CX, "cy": CY, "w": W, "h": H, "k1": 0.0, "k2": 0.0, "k3": 0.0, "k4": 0.0,
        "camera_model": "PINHOLE", "has_mask": True,
        "frames": [frame("a", "a.png", mask_path="a.png", is_bad=False), frame("b", "b.jpg", fl_x=50.0, cx=20.0)],
        "test_frames": [frame("c", "c.png")],
    }


def write_metas(root: Path, metas: dict) -> None:
    """Each JSON: a dict, or raw text (for malformed files)."""
    for name, meta in metas.items():
        (root / name).write_text(meta if isinstance(meta, str) else json.dumps(meta))


def write_fit3d(root: Path, metas: dict | None = None) -> Path:
    for name in ("a.png", "b.jpg", "c.png"):
        write_image(root / "images" / name)
    mask = np.zeros((H, W), np.uint8)
    mask[:, : W // 2] = 255
    (root / "masks").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "masks" / "a.png"), mask)
    write_metas(root, metas or {"transforms_train.json": fit3d_meta()})
    (root / "points3D.txt").write_text(POINTS_TXT)
    return root


def test_fit3d_scene_folder_loads_in_the_colmap_frame(tmp_path):
    assert is_scene_dir(write_fit3d(tmp_path))
    scene = load_scene(tmp_path)
    assert [v.name for v in scene.train] == ["a", "b"] and [v.name for v in scene.test] == ["c"]
    a, b = scene.train
    assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == (FX, FY, CX, CY, W, H)
    assert (b.fx, b.fy, b.cx, b.cy) == (50.0, FY, 20.0, CY)  # per-frame values win
    assert a.image_path == tmp_path / "images" / "a.png" and a.mask_path == tmp_path / "masks" / "a.png"
    assert b.mask_path is None and scene.notes == ()
    for view in scene.train + scene.test:  # the toolkit's permutation inverted exactly
        np.testing.assert_allclose(view.world_to_camera, POSES[view.name], atol=1e-12)
    np.testing.assert_allclose(a.camera_center, CENTRE, atol=1e-12)
    # 2 m straight ahead lands on the principal point; up in the world is up in the image (smaller
    # v, OpenCV y down); world -y is the camera's right (larger u).
    np.testing.assert_allclose(project(a, CENTRE + [2, 0, 0]), (CX, CY, 2.0), atol=1e-12)
    np.testing.assert_allclose(project(a, CENTRE + [2, 0, 0.5]), (CX, CY - FY * 0.25, 2.0), atol=1e-12)
    np.testing.assert_allclose(project(a, CENTRE + [2, -0.5, 0]), (CX + FX * 0.25, CY, 2.0), atol=1e-12)
    for view in scene.train + scene.test:
        assert view.world_to_camera.dtype == np.float64 and view.world_to_camera.shape == (4, 4)
    np.testing.assert_array_equal(scene.points, POINTS)
    np.testing.assert_array_equal(scene.point_colors, POINT_COLOURS)
    assert scene.point_colors.dtype == np.uint8 and scene.classes is None and scene.name == tmp_path.name


def test_bad_frames_are_left_out_and_doubled_test_frames_held_out(tmp_path):
    meta = fit3d_meta()
    meta["frames"][1]["is_bad"] = True
    meta["frames"].append(dict(meta["test_frames"][0]))  # the toolkit's downscale step appends the test frames
    scene = load_scene(write_fit3d(tmp_path, {"transforms_train.json": meta}))
    assert [v.name for v in scene.train] == ["a"] and [v.name for v in scene.test] == ["c"]
    assert any("1 frame(s) marked is_bad" in n for n in scene.notes)
    assert any("1 test frame(s) also listed in 'frames'" in n for n in scene.notes)


def test_legacy_two_file_layout_reads_plain_poses(tmp_path):
    meta = fit3d_meta(plain_transform)
    test = {key: meta[key] for key in ("fl_x", "fl_y", "cx", "cy", "w", "h")} | {"frames": meta.pop("test_frames")}
    scene = load_scene(write_fit3d(tmp_path, {"transforms_train.json": meta, "transforms_test.json": test}))
    assert [v.name for v in scene.test] == ["c"]
    for view in scene.train + scene.test:
        np.testing.assert_allclose(view.world_to_camera, POSES[view.name], atol=1e-12)


def test_applied_transform_takes_colmap_points_into_the_frames_world(tmp_path):
    swap = np.array([[0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]])  # as ns-process-data writes
    meta = fit3d_meta(plain_transform)
    meta["applied_transform"] = swap.tolist()
    (tmp_path / "colmap").mkdir()
    write_fit3d(tmp_path, {"transforms_train.json": meta})
    # points3D.txt holds COLMAP's frame: the points that, transformed by swap, lie ahead of the cameras
    colmap_points = (POINTS - swap[:, 3]) @ swap[:, :3]
    colmap.write_points3d_text(tmp_path / "points3D.txt", colmap_points, POINT_COLOURS)
    scene = load_scene(tmp_path)
    np.testing.assert_allclose(scene.points, POINTS, atol=1e-12)


def test_pixel_readers(tmp_path):
    scene = load_scene(write_fit3d(tmp_path))
    a = scene.train[0]
    bgr = cv2.imread(str(a.image_path))
    image = read_image(a)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, bgr[..., ::-1])  # RGB
    mask = read_mask(a)
    assert mask.dtype == bool and mask[:, : W // 2].all() and not mask[:, W // 2:].any()
    assert read_mask(scene.train[1]) is None and read_depth(a) is None and read_labels(a) is None


def test_depth_and_label_readers(tmp_path):
    meta = fit3d_meta()
    meta["frames"][0].update(depth_path="a.png", label_path="labels/a.png")  # bare, or relative to the scene
    root = write_fit3d(tmp_path, {"transforms_train.json": meta})
    millimetres = np.random.default_rng(1).integers(0, 2 ** 16, (H, W), dtype=np.uint16)
    labels = np.random.default_rng(2).integers(0, 12, (H, W), dtype=np.uint8)
    for sub, pixels in (("depth", millimetres), ("labels", labels)):
        (root / sub).mkdir()
        cv2.imwrite(str(root / sub / "a.png"), pixels)
    (root / "classes.json").write_text(json.dumps(["void", "wall"]))
    scene = load_scene(root)
    depth = read_depth(scene.train[0])
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, millimetres / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(read_labels(scene.train[0]), labels)
    assert scene.classes == ("void", "wall")


# Bad-input cases: edit(meta, root) breaks a valid scene (its files are written before, its JSON after).


def _json_text(text: str):
    def edit(metas, root):
        metas["transforms_train.json"] = text
    return edit


def _set(key, value, frame: int | None = None, split: str = "frames"):
    def edit(metas, root):
        target = metas["transforms_train.json"]
        if frame is not None:
            target = target[split][frame]
        if value is KeyError:
            del target[key]
        else:
            target[key] = value
    return edit


def _write(relative: str, content: bytes | str):
    def edit(metas, root):
        path = root / relative
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return edit


def _remove(relative: str):
    return lambda metas, root: (root / relative).unlink()


A_GL = toolkit_transform(POSES["a"])
SCALED = (A_GL * [[1.1], [1.1], [1.1], [1]]).tolist()
MIRRORED = (A_GL @ np.diag([-1.0, 1, 1, 1])).tolist()
NAN_POSE = np.where(np.eye(4) == 1, np.nan, A_GL).tolist()
BEHIND = toolkit_transform(world_to_camera(np.pi))  # looking away from every point

NERFSTUDIO_ERRORS = {
    "malformed JSON": (_json_text('{"frames": [}'), r"transforms_train\.json: malformed JSON: .* line 1, column 13"),
    "top level not an object": (_json_text("[]"), r"transforms_train\.json: expected a JSON object"),
    "no frames": (_set("frames", KeyError), r"transforms_train\.json: missing 'frames'"),
    "test_frames not a list": (_set("test_frames", {}), r"transforms_train\.json: 'test_frames' is not a list"),
    "empty train split": (_set("frames", []), r"transforms_train\.json: frames: no training views"),
    "every frame bad": (_set("frames", [{"file_path": "a.png", "transform_matrix": A_GL.tolist(), "is_bad": True}]),
                        r"frames: no training views \(1 frame\(s\) marked is_bad left out\)"),
    "is_bad not a flag": (_set("is_bad", "yes", frame=0), r"frames\[0\]\.is_bad: 'yes' is not true or false"),
    "missing intrinsic": (_set("fl_y", KeyError), r"transforms_train\.json: frames\[0\]: missing 'fl_y'"),
    "missing file_path": (_set("file_path", KeyError, frame=1), r"transforms_train\.json: frames\[1\]: missing 'file_path'"),
    "missing pose": (_set("transform_matrix", KeyError, frame=0), r"frames\[0\]: missing 'transform_matrix'"),
    "missing image": (_remove("images/b.jpg"), r"frames\[1\]\.file_path: 'b\.jpg': no such file"),
    "unreadable image": (_write("images/c.png", b"not a png"), r"test_frames\[0\] \(image\): .*c\.png: not a readable image"),
    "image size": (lambda m, r: write_image(r / "images" / "b.jpg", 40, 30), r"frames\[1\] \(image\): .*b\.jpg is 40x30 pixels, but w=48, h=32"),
    "mask size": (lambda m, r: write_image(r / "masks" / "a.png", 24, 32), r"frames\[0\] \(mask\): .*a\.png is 24x32 pixels"),
    "missing mask": (_remove("masks/a.png"), r"frames\[0\]\.mask_path: 'a\.png': no such file"),
    "fractional width": (_set("w", 48.5), r"transforms_train\.json: w: 48\.5 is not a positive integer"),
    "negative focal": (_set("fl_x", -3.0, frame=1), r"frames\[1\]\.fl_x: -3\.0 must be > 0"),
    "text focal": (_set("fl_x", "40"), r"transforms_train\.json: fl_x: '40' is not a finite number"),
    "unknown model": (_set("camera_model", "EQUIRECTANGULAR"), r"camera_model: camera model 'EQUIRECTANGULAR' is not supported"),
    "fisheye, not prepared": (lambda m, r: m["transforms_train.json"].update(camera_model="OPENCV_FISHEYE", k1=0.02),
                              r"transforms_train\.json: k1: the images are distorted \(.*camera_model: OPENCV_FISHEYE, k1=0\.02\); "
                              r"run `python -m fit3d_jax\.main --config=configs/prepare_scannetpp\.py"),
    "distortion": (_set("k1", 0.01, frame=0), r"frames\[0\]\.k1: the images are distorted .*undistort the images first"),
    "scaled rotation": (_set("transform_matrix", SCALED, frame=0), r"frames\[0\]\.transform_matrix: rotation is not a proper rotation"),
    "reflection": (_set("transform_matrix", MIRRORED, frame=0, split="test_frames"), r"test_frames\[0\]\.transform_matrix: rotation is not a proper"),
    "non-finite pose": (_set("transform_matrix", NAN_POSE, frame=1), r"frames\[1\]\.transform_matrix: non-finite values"),
    "pose shape": (_set("transform_matrix", [[1, 0, 0], [0, 1, 0]], frame=0), r"frames\[0\]\.transform_matrix: expected a 4x4"),
    "projective last row": (_set("transform_matrix", (A_GL + [[0], [0], [0], [0.5]]).tolist(), frame=0), r"frames\[0\]\.transform_matrix: last row"),
    "points not seen": (lambda m, r: [f.update(transform_matrix=BEHIND.tolist())
                                      for f in m["transforms_train.json"]["frames"] + m["transforms_train.json"]["test_frames"]],
                        r"points3D\.txt against the views of .*transforms_train\.json: the sparse points are not seen by the cameras: 0 of 3 views"),
    "no points file": (_remove("points3D.txt"), r"no .*points3D\.txt"),
    "no points": (_write("points3D.txt", "# only a comment\n\n"), r"points3D\.txt: no points"),
    "unparsable point": (_write("points3D.txt", POINTS_TXT + "7 1.0 abc 2.0 1 1 1 0\n"), r"points3D\.txt:9: Y: 'abc' is not a number"),
    "short point line": (_write("points3D.txt", POINTS_TXT + "7 1.0 2.0\n"), r"points3D\.txt:9: expected POINT3D_ID X Y Z"),
    "colour range": (_write("points3D.txt", "1 0 0 0 256 0 0 0\n"), r"points3D\.txt:1: colour \[256, 0, 0\] is outside"),
    "duplicate view": (lambda m, r: (write_image(r / "images" / "a.jpg"), m["transforms_train.json"].update(
        test_frames=[{"file_path": "a.jpg", "transform_matrix": A_GL.tolist()}])), r"two views are named 'a'"),
    "bad classes": (_write("classes.json", '{"0": "void"}'), r"classes\.json: expected a JSON list"),
}


@pytest.mark.parametrize("case", sorted(NERFSTUDIO_ERRORS))
def test_bad_fit3d_scene_names_file_and_field(tmp_path, case):
    edit, message = NERFSTUDIO_ERRORS[case]
    metas = {"transforms_train.json": fit3d_meta()}
    write_fit3d(tmp_path, metas)
    edit(metas, tmp_path)
    write_metas(tmp_path, metas)
    with pytest.raises(SceneError, match=message):
        load_scene(tmp_path)


def test_not_a_scene(tmp_path):
    assert not is_scene_dir(tmp_path) and not is_scene_dir(tmp_path / "missing")
    with pytest.raises(SceneError, match="no such scene folder"):
        load_scene(tmp_path / "missing")
    with pytest.raises(SceneError, match=r"not a scene: neither transforms_train\.json, a ScanNet\+\+ dslr/ folder .* nor a COLMAP model"):
        load_scene(tmp_path)
    with pytest.raises(ValueError, match="test_every"):
        load_scene(tmp_path, test_every=-1)


# ---------------------------------------------------------------------------------------------
# COLMAP scenes


def axis_angle_rotation(rng) -> tuple[np.ndarray, np.ndarray]:
    """A random rotation (OpenCV's Rodrigues) and its COLMAP quaternion (w, x, y, z)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0.1, 3.0)
    rotation, _ = cv2.Rodrigues(axis * angle)
    return rotation, np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])


def colmap_fixture(rng, count: int = 10):
    """cameras (id, model, w, h, params), images (id, q, t, camera id, name), points (xyz, rgb)."""
    cameras = [(1, "PINHOLE", W, H, [FX, FY, CX, CY]), (3, "SIMPLE_PINHOLE", 36, 24, [30.0, 18.0, 12.0])]
    images, rotations, xyz = [], {}, []
    for k in range(count):
        rotation, qvec = axis_angle_rotation(rng)
        name = f"img_{(k * 7) % count:02d}.png"  # listed out of name order
        rotations[name] = rotation
        tvec = rng.normal(size=3)
        images.append((k + 1, qvec, tvec, 1 if k % 3 else 3, name))
        # three points ahead of each camera, so that the points-seen check passes
        xyz += [rotation.T @ (np.array([x, 0.1, 2.0]) - tvec) for x in (-0.2, 0.0, 0.2)]
    xyz = np.array(xyz)
    rgb = rng.integers(0, 256, (len(xyz), 3))
    return cameras, images, (xyz, rgb), rotations


def write_colmap_text(folder: Path, cameras, images, points, *, points2d: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list", *(f"{c} {m} {w} {h} {' '.join(map(repr, p))}" for c, m, w, h, p in cameras)]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for k, (image_id, q, t, camera_id, name) in enumerate(images):
        lines.append(f"{image_id} {' '.join(map(repr, q.tolist() + t.tolist()))} {camera_id} {name}")
        if points2d:
            lines.append("" if k % 2 else "10.5 3.25 -1 7.0 8.0 2")
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    xyz, rgb = points
    lines = [f"{i + 1} {' '.join(map(repr, p.tolist()))} {' '.join(map(str, c))} 0.5 1 2" for i, (p, c) in enumerate(zip(xyz, rgb))]
    (folder / "points3D.txt").write_text("# 3D point list\n" + "\n".join(lines) + "\n")


def write_colmap_binary(folder: Path, cameras, images, points) -> None:
    """COLMAP's binary model layout (little-endian), written independently of the reader."""
    folder.mkdir(parents=True, exist_ok=True)
    model_ids = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "OPENCV": 4}
    data = struct.pack("<Q", len(cameras))
    for camera_id, model, w, h, params in cameras:
        data += struct.pack(f"<iiQQ{len(params)}d", camera_id, model_ids[model], w, h, *params)
    (folder / "cameras.bin").write_bytes(data)
    data = struct.pack("<Q", len(images))
    for image_id, q, t, camera_id, name in images:
        data += struct.pack("<i7di", image_id, *q, *t, camera_id) + name.encode() + b"\0"
        data += struct.pack("<Q", 2) + struct.pack("<ddq", 1.5, 2.5, -1) + struct.pack("<ddq", 3.0, 4.0, 7)
    (folder / "images.bin").write_bytes(data)
    xyz, rgb = points
    data = struct.pack("<Q", len(xyz))
    for i, (p, c) in enumerate(zip(xyz, rgb)):
        data += struct.pack("<Q3d3BdQ", i + 1, *p, *c, 0.5, 2) + struct.pack("<iiii", 1, 0, 2, 5)
    (folder / "points3D.bin").write_bytes(data)


def write_colmap_images(root: Path, images, cameras) -> None:
    sizes = {c[0]: (c[2], c[3]) for c in cameras}
    for k, (_, _, _, camera_id, name) in enumerate(images):
        write_image(root / "images" / name, *sizes[camera_id], seed=k)


@pytest.mark.parametrize("layout", ["text in sparse/0", "binary in sparse", "text in the folder"])
def test_colmap_scene_loads(tmp_path, layout, seed):
    cameras, images, points, rotations = colmap_fixture(np.random.default_rng(seed))
    folder = {"text in sparse/0": tmp_path / "sparse" / "0", "binary in sparse": tmp_path / "sparse", "text in the folder": tmp_path}[layout]
    (write_colmap_binary if layout.startswith("binary") else write_colmap_text)(folder, cameras, images, points)
    write_colmap_images(tmp_path, images, cameras)
    assert is_scene_dir(tmp_path)
    scene = load_scene(tmp_path)
    names = [f"img_{k:02d}" for k in range(10)]
    assert [v.name for v in scene.test] == [names[0], names[8]], f"seed {seed}"  # every 8th by name, from the first
    assert [v.name for v in scene.train] == [n for i, n in enumerate(names) if i % 8], f"seed {seed}"
    by_name = {im[4]: im for im in images}
    for view in scene.train + scene.test:
        image_id, qvec, tvec, camera_id, name = by_name[view.image_path.name]
        np.testing.assert_allclose(view.world_to_camera[:3, :3], rotations[name], atol=1e-12, err_msg=f"seed {seed}")
        np.testing.assert_allclose(view.world_to_camera[:3, 3], tvec, atol=1e-12)
        expected = (FX, FY, CX, CY, W, H) if camera_id == 1 else (30.0, 30.0, 18.0, 12.0, 36, 24)
        assert (view.fx, view.fy, view.cx, view.cy, view.width, view.height) == expected
    np.testing.assert_allclose(scene.points, points[0])
    np.testing.assert_array_equal(scene.point_colors, points[1])
    assert load_scene(tmp_path, test_every=0).test == ()
    assert len(load_scene(tmp_path, test_every=3).test) == 4


def test_colmap_masks_follow_colmaps_naming(tmp_path):
    cameras, images, points, _ = colmap_fixture(np.random.default_rng(0), count=3)
    write_colmap_text(tmp_path / "sparse" / "0", cameras, images, points)
    write_colmap_images(tmp_path, images, cameras)
    sizes = {c[0]: (c[2], c[3]) for c in cameras}
    for _, _, _, camera_id, name in images:
        write_image(tmp_path / "masks" / f"{name}.png", *sizes[camera_id])
    scene = load_scene(tmp_path, test_every=0)
    assert all(v.mask_path == tmp_path / "masks" / f"{v.image_path.name}.png" for v in scene.train)
    (tmp_path / "masks" / f"{images[1][4]}.png").unlink()
    with pytest.raises(SceneError, match=rf"images\.txt:\d+ \({images[1][4]}\) \(mask\): .*no such file"):
        load_scene(tmp_path)


class ColmapFixture:
    """A valid COLMAP scene (images written) whose model a bad-input case edits, then writes."""

    def __init__(self, root: Path, seed: int):
        self.root, self.folder = root, root / "sparse" / "0"
        self.cameras, self.images, self.points, _ = colmap_fixture(np.random.default_rng(seed), count=4)
        write_colmap_images(root, self.images, self.cameras)

    def write(self, *, binary: bool = False, points2d: bool = True) -> None:
        if binary:
            write_colmap_binary(self.folder, self.cameras, self.images, self.points)
        else:
            write_colmap_text(self.folder, self.cameras, self.images, self.points, points2d=points2d)

    def set_image(self, index: int, **fields) -> None:
        image_id, q, t, camera_id, name = self.images[index]
        fields = dict(q=q, t=t, camera_id=camera_id, name=name) | fields
        self.images[index] = (image_id, fields["q"], fields["t"], fields["camera_id"], fields["name"])

    def edit_bytes(self, name: str, edit) -> None:
        path = self.folder / name
        path.write_bytes(edit(path.read_bytes()))


COLMAP_ERRORS = {}


def colmap_error(message: str):
    def register(case):
        COLMAP_ERRORS[case.__name__] = (case, message)
        return case
    return register


OPENCV = (1, "OPENCV", W, H, [FX, FY, CX, CY, 0.1, 0.0, 0.0, 0.0])


@colmap_error(r"cameras\.txt:2: camera 1: model OPENCV is not supported: use undistorted PINHOLE / SIMPLE_PINHOLE")
def opencv_text(f):
    f.cameras[0] = OPENCV
    f.write()


@colmap_error(r"cameras\.bin: camera 1: model OPENCV is not supported")
def opencv_binary(f):
    f.cameras[0] = OPENCV
    f.write(binary=True)


@colmap_error(r"cameras\.txt:2: unknown camera model 'SPHERICAL'")
def unknown_model(f):
    f.cameras[0] = (1, "SPHERICAL", W, H, [1.0])
    f.write()


@colmap_error(r"cameras\.txt:3: model SIMPLE_PINHOLE takes 3 parameters, got 4")
def parameter_count(f):
    f.cameras[1] = (3, "SIMPLE_PINHOLE", 36, 24, [30.0, 30.0, 18.0, 12.0])
    f.write()


@colmap_error(r"cameras\.txt:2: camera 1: fx: nan is not a finite number")
def nan_focal(f):
    f.cameras[0] = (1, "PINHOLE", W, H, [float("nan"), FY, CX, CY])
    f.write()


@colmap_error(r"images\.txt:6: CAMERA_ID 7 is not in the cameras file")
def unknown_camera(f):
    f.set_image(2, camera_id=7)
    f.write()


@colmap_error(r"images\.bin: image 2: QW QX QY QZ = \[1\.0, 0\.5, 0\.0, 0\.0\] is not a unit quaternion")
def non_unit_quaternion(f):
    f.set_image(1, q=np.array([1.0, 0.5, 0.0, 0.0]))
    f.write(binary=True)


@colmap_error(r"images\.txt:2 \(gone\.png\) \(image\): .*gone\.png: no such file")
def missing_image(f):
    f.set_image(0, name="gone.png")
    f.write()


@colmap_error(r"\(image\): .*\.png is 36x24 pixels, but w=30, h=24 are declared")
def image_size(f):
    f.cameras[1] = (3, "SIMPLE_PINHOLE", 30, 24, [30.0, 15.0, 12.0])  # its images are 36 wide
    f.write()


@colmap_error(r"images\.txt:3: expected the POINTS2D\[\] line of image 1")
def missing_points2d_lines(f):
    f.write(points2d=False)


@colmap_error(r"images\.bin: truncated at byte \d+ while reading the 2D points of image 4")
def truncated_binary(f):
    f.write(binary=True)
    f.edit_bytes("images.bin", lambda data: data[:-5])


@colmap_error(r"points3D\.bin: 1 unexpected bytes after the last record")
def trailing_bytes(f):
    f.write(binary=True)
    f.edit_bytes("points3D.bin", lambda data: data + b"x")


@colmap_error(r"points3D\.txt: no points")
def no_points(f):
    f.points = (np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    f.write()


@colmap_error(r"no images/ folder next to the COLMAP model")
def no_image_folder(f):
    f.write()
    shutil.rmtree(f.root / "images")


@pytest.mark.parametrize("case", sorted(COLMAP_ERRORS))
def test_bad_colmap_scene_names_file_and_field(tmp_path, case):
    breaks, message = COLMAP_ERRORS[case]
    breaks(ColmapFixture(tmp_path, seed=1))
    with pytest.raises(SceneError, match=message):
        load_scene(tmp_path)


def test_empty_train_split_is_an_error(tmp_path):
    cameras, images, points, _ = colmap_fixture(np.random.default_rng(2), count=3)
    write_colmap_text(tmp_path / "sparse" / "0", cameras, images, points)
    write_colmap_images(tmp_path, images, cameras)
    with pytest.raises(SceneError, match=r"sparse/0: empty train split: test_every=1 makes all 3 images test views"):
        load_scene(tmp_path, test_every=1)


def test_quaternion_round_trip(rng):
    for _ in range(200):
        rotation, qvec = axis_angle_rotation(rng)
        back = colmap.rotation_to_qvec(rotation)
        np.testing.assert_allclose(back, qvec * np.sign(qvec[0]), atol=1e-12)
        np.testing.assert_allclose(colmap.qvec_to_rotation(back), rotation, atol=1e-12)
    for angle in (np.pi, np.pi - 1e-9):  # near-half-turns, where the trace method is unstable
        rotation, _ = cv2.Rodrigues(np.array([0.0, angle, 0.0]))
        np.testing.assert_allclose(colmap.qvec_to_rotation(colmap.rotation_to_qvec(rotation)), rotation, atol=1e-12)
