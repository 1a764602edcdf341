"""Scene loading: hand-written nerfstudio-style and COLMAP (text and binary) scenes, every bad input
raising a SceneError that names the file and field, and the per-view pixel readers."""

import json
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from fit3d_jax.scenes import SceneError, is_scene_dir, load_scene, read_depth, read_image, read_labels, read_mask
from fit3d_jax.scenes import colmap

W, H = 48, 32
FX, FY, CX, CY = 40.0, 42.0, 23.5, 16.25

# Camera-to-world in the OpenGL convention for a camera at CENTRE looking along world +x with world
# +z up: its right is world -y, its up world +z, its back world -x (columns).
CENTRE = np.array([1.0, 2.0, 0.5])
LOOK_ALONG_X = np.array([[0.0, 0.0, -1.0, CENTRE[0]], [-1.0, 0.0, 0.0, CENTRE[1]], [0.0, 1.0, 0.0, CENTRE[2]], [0, 0, 0, 1]])


def write_image(path: Path, width: int = W, height: int = H, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def project(view, world_point) -> tuple[float, float, float]:
    """(u, v, depth) of a world point, pixel centres at +0.5 (the convention View documents)."""
    p = view.world_to_camera @ np.append(world_point, 1.0)
    return view.fx * p[0] / p[2] + view.cx, view.fy * p[1] / p[2] + view.cy, p[2]


# ---------------------------------------------------------------------------------------------
# nerfstudio-style scenes


def turned(c2w: np.ndarray, angle: float) -> np.ndarray:
    """``c2w`` rotated about world z (a different, still valid pose)."""
    c, s = np.cos(angle), np.sin(angle)
    rz = np.eye(4)
    rz[:2, :2] = [[c, -s], [s, c]]
    return rz @ c2w


def nerfstudio_metas() -> dict[str, dict]:
    train = {
        "camera_model": "OPENCV", "fl_x": FX, "fl_y": FY, "cx": CX, "cy": CY, "w": W, "h": H,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": [
            {"file_path": "images/a.png", "transform_matrix": LOOK_ALONG_X.tolist(), "mask_path": "masks/a.png"},
            {"file_path": "images/b.jpg", "transform_matrix": turned(LOOK_ALONG_X, 0.3).tolist(), "fl_x": 50.0, "cx": 20.0},
        ],
    }
    test = {"fl_x": FX, "fl_y": FY, "cx": CX, "cy": CY, "w": W, "h": H,
            "frames": [{"file_path": "images/c.png", "transform_matrix": turned(LOOK_ALONG_X, -0.4).tolist()}]}
    return {"transforms_train.json": train, "transforms_test.json": test}


POINTS_TXT = """# 3D point list with one line of data per point:
#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)
1 0.5 1.0 1.5 255 0 10 0.7 1 3 2 8
2 -1.0 2.0 0.25 1 2 3 0.1
"""


def write_metas(root: Path, metas: dict) -> None:
    """Each JSON: a dict, or raw text (for malformed files)."""
    for name, meta in metas.items():
        (root / name).write_text(meta if isinstance(meta, str) else json.dumps(meta))


def write_nerfstudio(root: Path, metas: dict | None = None) -> Path:
    for name in ("a.png", "b.jpg", "c.png"):
        write_image(root / "images" / name)
    mask = np.zeros((H, W), np.uint8)
    mask[:, : W // 2] = 255
    (root / "masks").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "masks" / "a.png"), mask)
    write_metas(root, metas or nerfstudio_metas())
    (root / "points3D.txt").write_text(POINTS_TXT)
    return root


def test_nerfstudio_scene_loads_with_opencv_poses(tmp_path):
    assert is_scene_dir(write_nerfstudio(tmp_path))
    scene = load_scene(tmp_path)
    assert [v.name for v in scene.train] == ["a", "b"] and [v.name for v in scene.test] == ["c"]
    a, b = scene.train
    assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == (FX, FY, CX, CY, W, H)
    assert (b.fx, b.fy, b.cx, b.cy) == (50.0, FY, 20.0, CY)  # per-frame values win
    assert a.mask_path == tmp_path / "masks" / "a.png" and b.mask_path is None
    np.testing.assert_allclose(a.camera_center, CENTRE, atol=1e-12)
    # 2 m straight ahead lands on the principal point; up in the world is up in the image (smaller
    # v, OpenCV y down); world -y is the camera's right (larger u).
    np.testing.assert_allclose(project(a, CENTRE + [2, 0, 0]), (CX, CY, 2.0), atol=1e-12)
    np.testing.assert_allclose(project(a, CENTRE + [2, 0, 0.5]), (CX, CY - FY * 0.25, 2.0), atol=1e-12)
    np.testing.assert_allclose(project(a, CENTRE + [2, -0.5, 0]), (CX + FX * 0.25, CY, 2.0), atol=1e-12)
    for view in scene.train + scene.test:
        assert view.world_to_camera.dtype == np.float64 and view.world_to_camera.shape == (4, 4)
        np.testing.assert_allclose(view.world_to_camera[:3, :3] @ view.world_to_camera[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(scene.points, [[0.5, 1.0, 1.5], [-1.0, 2.0, 0.25]])
    np.testing.assert_array_equal(scene.point_colors, [[255, 0, 10], [1, 2, 3]])
    assert scene.point_colors.dtype == np.uint8 and scene.classes is None and scene.name == tmp_path.name


def test_scannetpp_bare_file_names_resolve_in_images_and_masks(tmp_path):
    metas = nerfstudio_metas()
    metas["transforms_train.json"]["frames"][0].update(file_path="a.png", mask_path="a.png")
    del metas["transforms_test.json"]
    scene = load_scene(write_nerfstudio(tmp_path, metas))
    assert scene.train[0].image_path == tmp_path / "images" / "a.png"
    assert scene.train[0].mask_path == tmp_path / "masks" / "a.png"
    assert scene.test == ()  # no transforms_test.json: no test views


def test_applied_transform_takes_colmap_points_into_the_frames_world(tmp_path):
    metas = nerfstudio_metas()
    swap = [[0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0]]  # as ns-process-data writes
    metas["transforms_train.json"]["applied_transform"] = swap
    scene = load_scene(write_nerfstudio(tmp_path, metas))
    np.testing.assert_allclose(scene.points, [[1.5, 0.5, -1.5], [2.5, -1.0, -0.25]])


def test_pixel_readers(tmp_path):
    scene = load_scene(write_nerfstudio(tmp_path))
    a = scene.train[0]
    bgr = cv2.imread(str(a.image_path))
    image = read_image(a)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, bgr[..., ::-1])  # RGB
    mask = read_mask(a)
    assert mask.dtype == bool and mask[:, : W // 2].all() and not mask[:, W // 2:].any()
    assert read_mask(scene.train[1]) is None and read_depth(a) is None and read_labels(a) is None


def test_depth_and_label_readers(tmp_path):
    metas = nerfstudio_metas()
    metas["transforms_train.json"]["frames"][0].update(depth_path="depth/a.png", label_path="labels/a.png")
    root = write_nerfstudio(tmp_path, metas)
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


# Bad-input cases: edit(metas, root) breaks a valid scene (its files are written before, its JSONs after).


def _json_text(split: str, text: str):
    def edit(metas, root):
        metas[f"transforms_{split}.json"] = text
    return edit


def _set(split: str, key, value, frame: int | None = None):
    def edit(metas, root):
        target = metas[f"transforms_{split}.json"]
        if frame is not None:
            target = target["frames"][frame]
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


SCALED = (LOOK_ALONG_X * [[1.1], [1.1], [1.1], [1]]).tolist()
MIRRORED = (LOOK_ALONG_X @ np.diag([-1.0, 1, 1, 1])).tolist()
NAN_POSE = np.where(np.eye(4) == 1, np.nan, LOOK_ALONG_X).tolist()

NERFSTUDIO_ERRORS = {
    "malformed JSON": (_json_text("train", '{"frames": [}'), r"transforms_train\.json: malformed JSON: .* line 1, column 13"),
    "top level not an object": (_json_text("test", "[]"), r"transforms_test\.json: expected a JSON object"),
    "no frames": (_set("train", "frames", KeyError), r"transforms_train\.json: missing 'frames'"),
    "empty train split": (_set("train", "frames", []), r"transforms_train\.json: frames: empty train split"),
    "missing intrinsic": (_set("test", "fl_y", KeyError), r"transforms_test\.json: frames\[0\]: missing 'fl_y'"),
    "missing file_path": (_set("train", "file_path", KeyError, frame=1), r"transforms_train\.json: frames\[1\]: missing 'file_path'"),
    "missing pose": (_set("train", "transform_matrix", KeyError, frame=0), r"frames\[0\]: missing 'transform_matrix'"),
    "missing image": (_remove("images/b.jpg"), r"frames\[1\]\.file_path: 'images/b\.jpg': no such file"),
    "unreadable image": (_write("images/c.png", b"not a png"), r"transforms_test\.json: frames\[0\] \(image\): .*c\.png: not a readable image"),
    "image size": (lambda m, r: write_image(r / "images" / "b.jpg", 40, 30), r"frames\[1\] \(image\): .*b\.jpg is 40x30 pixels, but w=48, h=32"),
    "mask size": (lambda m, r: write_image(r / "masks" / "a.png", 24, 32), r"frames\[0\] \(mask\): .*a\.png is 24x32 pixels"),
    "missing mask": (_remove("masks/a.png"), r"frames\[0\]\.mask_path: 'masks/a\.png': no such file"),
    "fractional width": (_set("train", "w", 48.5), r"transforms_train\.json: w: 48\.5 is not a positive integer"),
    "negative focal": (_set("train", "fl_x", -3.0, frame=1), r"frames\[1\]\.fl_x: -3\.0 must be > 0"),
    "text focal": (_set("test", "fl_x", "40"), r"transforms_test\.json: fl_x: '40' is not a finite number"),
    "fisheye model": (_set("train", "camera_model", "OPENCV_FISHEYE"), r"transforms_train\.json: camera_model: camera model 'OPENCV_FISHEYE' is not supported: use undistorted"),
    "distortion": (_set("train", "k1", 0.01, frame=0), r"frames\[0\]\.k1: distortion coefficient k1=0\.01 is not zero"),
    "scaled rotation": (_set("train", "transform_matrix", SCALED, frame=0), r"frames\[0\]\.transform_matrix: rotation is not a proper rotation"),
    "reflection": (_set("test", "transform_matrix", MIRRORED, frame=0), r"transforms_test\.json: frames\[0\]\.transform_matrix: rotation is not a proper"),
    "non-finite pose": (_set("train", "transform_matrix", NAN_POSE, frame=1), r"frames\[1\]\.transform_matrix: non-finite values"),
    "pose shape": (_set("train", "transform_matrix", [[1, 0, 0], [0, 1, 0]], frame=0), r"frames\[0\]\.transform_matrix: expected a 4x4"),
    "projective last row": (_set("train", "transform_matrix", (LOOK_ALONG_X + [[0], [0], [0], [0.5]]).tolist(), frame=0),
                            r"frames\[0\]\.transform_matrix: last row"),
    "no points file": (_remove("points3D.txt"), r"no points3D\.txt"),
    "no points": (_write("points3D.txt", "# only a comment\n\n"), r"points3D\.txt: no points"),
    "unparsable point": (_write("points3D.txt", POINTS_TXT + "3 1.0 abc 2.0 1 1 1 0\n"), r"points3D\.txt:5: Y: 'abc' is not a number"),
    "short point line": (_write("points3D.txt", POINTS_TXT + "3 1.0 2.0\n"), r"points3D\.txt:5: expected POINT3D_ID X Y Z"),
    "colour range": (_write("points3D.txt", "1 0 0 0 256 0 0 0\n"), r"points3D\.txt:1: colour \[256, 0, 0\] is outside"),
    "duplicate view": (_set("test", "frames", [{"file_path": "images/a.png", "transform_matrix": LOOK_ALONG_X.tolist()}]),
                       r"two views are named 'a'"),
    "bad classes": (_write("classes.json", '{"0": "void"}'), r"classes\.json: expected a JSON list"),
}


@pytest.mark.parametrize("case", sorted(NERFSTUDIO_ERRORS))
def test_bad_nerfstudio_scene_names_file_and_field(tmp_path, case):
    edit, message = NERFSTUDIO_ERRORS[case]
    metas = nerfstudio_metas()
    write_nerfstudio(tmp_path, metas)
    edit(metas, tmp_path)
    write_metas(tmp_path, metas)
    with pytest.raises(SceneError, match=message):
        load_scene(tmp_path)


def test_not_a_scene(tmp_path):
    assert not is_scene_dir(tmp_path) and not is_scene_dir(tmp_path / "missing")
    with pytest.raises(SceneError, match="no such scene folder"):
        load_scene(tmp_path / "missing")
    with pytest.raises(SceneError, match=r"not a scene: neither transforms_train\.json nor a COLMAP model"):
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
    images, rotations = [], {}
    for k in range(count):
        rotation, qvec = axis_angle_rotation(rng)
        name = f"img_{(k * 7) % count:02d}.png"  # listed out of name order
        rotations[name] = rotation
        images.append((k + 1, qvec, rng.normal(size=3), 1 if k % 3 else 3, name))
    xyz = rng.normal(size=(5, 3))
    rgb = rng.integers(0, 256, (5, 3))
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
def test_colmap_scene_loads(tmp_path, layout):
    seed = int(np.random.default_rng().integers(2 ** 31))
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


def test_quaternion_round_trip():
    rng = np.random.default_rng()
    for _ in range(200):
        rotation, qvec = axis_angle_rotation(rng)
        back = colmap.rotation_to_qvec(rotation)
        np.testing.assert_allclose(back, qvec * np.sign(qvec[0]), atol=1e-12)
        np.testing.assert_allclose(colmap.qvec_to_rotation(back), rotation, atol=1e-12)
    for angle in (np.pi, np.pi - 1e-9):  # near-half-turns, where the trace method is unstable
        rotation, _ = cv2.Rodrigues(np.array([0.0, angle, 0.0]))
        np.testing.assert_allclose(colmap.qvec_to_rotation(colmap.rotation_to_qvec(rotation)), rotation, atol=1e-12)
