"""Built-in synthetic rooms: they load through the scene loader, their depth and labels agree with
their geometry across views, they are reproducible from the seed, poses round-trip through the
writers, and the generate_rooms job."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import configs_loader
from conftest import draw_seed
from fit3d_jax import jobs
from fit3d_jax.errors import ConfigError
from fit3d_jax.jobs import generate_rooms
from fit3d_jax.scenes import SceneData, colmap, load_scene, nerfstudio, read_depth, read_image, read_labels, synthetic

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(width=219, height=146, num_train=10, num_test=3, num_points=3000)


@pytest.fixture(scope="module")
def room(tmp_path_factory, request) -> tuple[int, SceneData]:
    seed = draw_seed(request) % 10_000
    path = synthetic.generate_room(tmp_path_factory.mktemp("rooms") / "room", seed=seed, **SMALL)
    return seed, load_scene(path)


def views_in_path_order(scene: SceneData):
    return sorted(scene.train + scene.test, key=lambda v: v.name)


def camera_points(view, depth: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Camera-space points of pixels (i, j) at their depth (camera z), pixel centres at +0.5."""
    z = depth[i, j].astype(np.float64)
    return np.stack([(j + 0.5 - view.cx) / view.fx * z, (i + 0.5 - view.cy) / view.fy * z, z], -1)


def to_world(view, points: np.ndarray) -> np.ndarray:
    rotation, translation = view.world_to_camera[:3, :3], view.world_to_camera[:3, 3]
    return (points - translation) @ rotation


def to_camera(view, points: np.ndarray) -> np.ndarray:
    return points @ view.world_to_camera[:3, :3].T + view.world_to_camera[:3, 3]


def interior(labels: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is one surface: same label, no depth step over 3%."""
    kernel = np.ones((3, 3), np.uint8)
    same_label = cv2.dilate(labels, kernel) == cv2.erode(labels, kernel)
    smooth = cv2.dilate(depth, kernel) <= cv2.erode(depth, kernel) * 1.03
    return same_label & smooth & (depth > 0)


def test_generated_room_loads(room):
    seed, scene = room
    assert len(scene.train) == SMALL["num_train"] and len(scene.test) == SMALL["num_test"]
    assert scene.classes == synthetic.CLASSES and scene.classes[0] == "void"
    assert scene.points.shape == (SMALL["num_points"], 3) and scene.point_colors.shape == (SMALL["num_points"], 3)
    for view in scene.train + scene.test:
        assert (view.width, view.height) == (SMALL["width"], SMALL["height"])
        assert view.fx == view.fy == pytest.approx(SMALL["width"] / 2)  # 90 degrees across
        image, depth, labels = read_image(view), read_depth(view), read_labels(view)
        assert image.shape == (view.height, view.width, 3) and depth.dtype == np.float32
        assert (depth > 0).all(), f"seed {seed}: a closed room has a surface behind every pixel"
        assert labels.max() < len(scene.classes) and (labels > 0).all(), f"seed {seed}"
    seen = np.unique(np.concatenate([read_labels(v).ravel() for v in scene.train]))
    for name in ("wall", "floor", "ceiling"):
        assert synthetic.LABELS[name] in seen, f"seed {seed}: no {name} in any view"
    assert len(seen) >= 7, f"seed {seed}: only classes {[scene.classes[k] for k in seen]} visible"


def test_test_views_are_interleaved_along_the_path(room):
    seed, scene = room
    order = [v.name for v in views_in_path_order(scene)]
    positions = sorted(order.index(v.name) for v in scene.test)
    assert np.diff(positions).min() >= 2, f"seed {seed}: test views {positions} are not separated by training views"
    assert positions[-1] - positions[0] >= len(order) / 2, f"seed {seed}: test views {positions} bunch on part of the path"


def test_depth_is_camera_z_onto_the_rooms_planes(room):
    """Floor pixels back-project to z = 0, ceiling pixels to one height, walls to four planes: only
    true if depth is camera-space z (a ray length would bend the planes)."""
    seed, scene = room
    planes = {"floor": [], "ceiling": [], "wall": []}
    for view in scene.train:
        depth, labels = read_depth(view), read_labels(view)
        for name, points in planes.items():
            i, j = np.nonzero((labels == synthetic.LABELS[name]) & interior(labels, depth))
            points.append(to_world(view, camera_points(view, depth, i, j)))
    floor, ceiling, wall = (np.concatenate(planes[k]) for k in ("floor", "ceiling", "wall"))
    assert np.abs(floor[:, 2]).max() < 2e-3, f"seed {seed}"  # millimetre depth PNGs
    assert np.ptp(ceiling[:, 2]) < 4e-3 and 2.4 < ceiling[:, 2].mean() < 3.1, f"seed {seed}"
    lo, hi = np.concatenate([floor, ceiling, wall]).min(0), np.concatenate([floor, ceiling, wall]).max(0)
    on_a_wall = np.minimum(np.abs(wall[:, :2] - lo[:2]), np.abs(wall[:, :2] - hi[:2])).min(1)
    assert on_a_wall.max() < 4e-3, f"seed {seed}"
    centres = np.array([v.camera_center for v in scene.train + scene.test])
    assert ((centres[:, :2] > lo[:2] + synthetic.CAMERA_CLEARANCE) & (centres[:, :2] < hi[:2] - synthetic.CAMERA_CLEARANCE)).all(), f"seed {seed}"
    assert ((centres[:, 2] > 1.3 - 1e-9) & (centres[:, 2] < 1.7 + 1e-9)).all(), f"seed {seed}: handheld height"


def test_depth_and_labels_agree_across_views(room):
    """Each view's depth reprojected into the next views lands on the same labels wherever the other
    view sees the same surface (its depth agrees) away from label and depth edges. Exact geometry:
    agreement is 100% in practice; the brief asks for > 95%, this checks > 99%."""
    seed, scene = room
    views = views_in_path_order(scene)
    data = [(read_depth(v), read_labels(v), read_image(v).astype(np.int16)) for v in views]
    checked, colours_a, colours_b = 0, [], []
    for a in range(len(views)):
        for b in (a + 1, a + 2):
            if b >= len(views):
                continue
            (depth_a, labels_a, image_a), (depth_b, labels_b, image_b) = data[a], data[b]
            i, j = np.nonzero(interior(labels_a, depth_a))
            cam_b = to_camera(views[b], to_world(views[a], camera_points(views[a], depth_a, i, j)))
            front = cam_b[:, 2] > 0.05
            u = views[b].fx * cam_b[:, 0] / np.where(front, cam_b[:, 2], 1) + views[b].cx
            v = views[b].fy * cam_b[:, 1] / np.where(front, cam_b[:, 2], 1) + views[b].cy
            inside = front & (u >= 0) & (u < views[b].width) & (v >= 0) & (v < views[b].height)
            ib, jb = np.floor(v[inside]).astype(int), np.floor(u[inside]).astype(int)
            z_b = cam_b[inside, 2]
            unoccluded = np.abs(depth_b[ib, jb] - z_b) < 0.01 + 0.01 * z_b
            usable = unoccluded & interior(labels_b, depth_b)[ib, jb]
            if usable.sum() < 0.1 * depth_a.size:
                continue  # too little overlap to judge this pair
            ia, ja = i[inside][usable], j[inside][usable]
            same = labels_b[ib[usable], jb[usable]] == labels_a[ia, ja]
            assert same.mean() > 0.99, f"seed {seed}: views {views[a].name} -> {views[b].name}: {same.mean():.3f} agree"
            colours_a.append(image_a[ia, ja])
            colours_b.append(image_b[ib[usable], jb[usable]])
            checked += 1
    assert checked >= len(views) // 2, f"seed {seed}: only {checked} view pairs overlap enough"
    # Lambertian shading: a surface point has about the same colour in every view, far closer than
    # unrelated pixels of the room (shuffled over all pairs, so one plain wall cannot dominate).
    colours_a, colours_b = np.concatenate(colours_a), np.concatenate(colours_b)
    error = np.median(np.abs(colours_b - colours_a).mean(1))
    unrelated = np.median(np.abs(colours_b - np.random.default_rng(0).permutation(colours_a)).mean(1))
    assert error < 0.3 * unrelated, f"seed {seed}: colour difference {error} vs {unrelated} between unrelated pixels"


def test_sparse_points_lie_on_seen_surfaces(room):
    seed, scene = room
    params = synthetic.recorded_parameters(scene.root)
    noise = params["point_noise"]
    best = np.full(len(scene.points), np.inf)
    for view in scene.train:
        cam = to_camera(view, scene.points)
        front = cam[:, 2] > 0.05
        u = np.floor(view.fx * cam[:, 0] / np.where(front, cam[:, 2], 1) + view.cx).astype(int)
        v = np.floor(view.fy * cam[:, 1] / np.where(front, cam[:, 2], 1) + view.cy).astype(int)
        ok = front & (u >= 0) & (u < view.width) & (v >= 0) & (v < view.height)
        gap = np.abs(read_depth(view)[v[ok], u[ok]] - cam[ok, 2])
        best[ok] = np.minimum(best[ok], gap)
    assert np.mean(best < 4 * noise + 2e-3) > 0.95, f"seed {seed}"
    assert np.mean(best < 0.1 * noise) < 0.5, f"seed {seed}: the points are not jittered"


def test_poses_round_trip_through_both_writers(room, tmp_path):
    seed, scene = room
    copy = Path(shutil.copytree(scene.root, tmp_path / "copy"))
    original = load_scene(copy)
    nerfstudio.write_scene(original)
    again = load_scene(copy)
    colmap.write_text_model(copy / "sparse" / "0", original.train + original.test, copy / "images", original.points, original.point_colors)
    (copy / nerfstudio.TRANSFORMS).unlink()
    as_colmap = load_scene(copy, test_every=0)
    for other, atol in ((again, 1e-12), (as_colmap, 1e-9)):
        views = {v.name: v for v in other.train + other.test}
        for view in original.train + original.test:
            twin = views[view.name]
            np.testing.assert_allclose(twin.world_to_camera, view.world_to_camera, atol=atol, err_msg=f"seed {seed}")
            assert (twin.fx, twin.fy, twin.cx, twin.cy, twin.width, twin.height) == (view.fx, view.fy, view.cx, view.cy, view.width, view.height)
        np.testing.assert_array_equal(other.points, original.points)
        np.testing.assert_array_equal(other.point_colors, original.point_colors)


def test_rooms_are_reproducible_from_the_seed(tmp_path, seed):
    seed %= 10_000
    tiny = dict(width=64, height=48, num_train=3, num_test=1, num_points=200)
    first = synthetic.generate_room(tmp_path / "a", seed=seed, **tiny)
    second = synthetic.generate_room(tmp_path / "b", seed=seed, **tiny)
    other = synthetic.generate_room(tmp_path / "c", seed=seed + 1, **tiny)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), f"seed {seed}: {relative} differs"
    assert (first / "images" / "frame_00000.png").read_bytes() != (other / "images" / "frame_00000.png").read_bytes()


def test_generate_room_checks_parameters_and_existing_folders(tmp_path):
    with pytest.raises(synthetic.RoomParameterError, match="num_train: 0 must be an integer >= 1") as error:
        synthetic.generate_room(tmp_path / "r", seed=1, num_train=0)
    assert error.value.field == "num_train"
    with pytest.raises(synthetic.RoomParameterError, match=r"fov_x_deg: 170 must be in \[20, 120\]"):
        synthetic.generate_room(tmp_path / "r", seed=1, fov_x_deg=170)
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not a generated room"):
        synthetic.generate_room(tmp_path / "mine", seed=1, overwrite=True)
    tiny = dict(width=32, height=24, num_train=2, num_test=0, num_points=20)
    room = synthetic.ensure_room(tmp_path / "r", seed=1, **tiny)
    stamp = (room / "images" / "frame_00000.png").stat().st_mtime_ns
    assert synthetic.ensure_room(room, seed=1, **tiny) == room
    assert (room / "images" / "frame_00000.png").stat().st_mtime_ns == stamp  # kept, not regenerated
    with pytest.raises(FileExistsError, match="generated with other height, width"):
        synthetic.ensure_room(room, seed=1, **(tiny | dict(width=40, height=30)))
    synthetic.generate_room(room, seed=1, overwrite=True, **(tiny | dict(width=40)))
    assert load_scene(room).train[0].width == 40
    assert not list(tmp_path.glob(".*partial*"))


def job_config(**overrides):
    config = configs_loader.load("generate_rooms.py")
    config.update(overrides)
    return config


def test_generate_rooms_job(tmp_path, capsys):
    config = job_config(output_dir=str(tmp_path), num_rooms=2, first_seed=5, width=40, height=30, num_train=3, num_test=1, num_points=50)
    generate_rooms.run(config)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["room_0005", "room_0006"]
    assert len(load_scene(tmp_path / "room_0006").test) == 1
    assert capsys.readouterr().out.count("generated in") == 2
    generate_rooms.run(config)
    assert capsys.readouterr().out.count("kept") == 2
    with pytest.raises(ConfigError, match=r"config\.output_dir: .*room_0005 holds a room generated with other width"):
        generate_rooms.run(job_config(**(config.to_dict() | dict(width=48))))


@pytest.mark.parametrize("overrides,field", [(dict(width=4), "config.width"), (dict(num_rooms=0), "config.num_rooms"),
                                             (dict(point_noise=-1.0), "config.point_noise"), (dict(num_test=-1), "config.num_test")])
def test_generate_rooms_job_names_bad_fields(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        jobs.run(job_config(output_dir=str(tmp_path), **overrides))
