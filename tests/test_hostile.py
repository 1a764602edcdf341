"""Bad inputs and hostile situations, as a new user meets them: each test asserts the error (or the
safe outcome), the exit status, and that nothing outside the output folder changed. The jobs run
as users run them, from the command line, or in process through ``jobs.run`` (what ``main``
calls) where the exit status is not the point."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest

import configs_loader
from conftest import short_fit
from fit3d_jax import jobs, viz
from fit3d_jax.errors import ConfigError
from fit3d_jax.finetune import train as finetune_train
from fit3d_jax.finetune.store import load_store
from fit3d_jax.harness import guard
from fit3d_jax.harness.loop import TrainLoop
from fit3d_jax.jobs import finetune as finetune_job
from fit3d_jax.jobs import ranges
from fit3d_jax.lift import export
from fit3d_jax.lift.gaussians import init_from_points
from fit3d_jax.models.dinov2 import ViTConfig, init_params
from fit3d_jax.scenes import SceneError, load_scene, nerfstudio, verify_pixels
from fit3d_jax.scenes.pixels import file_digest
from fit3d_jax.scenes.synthetic import generate_room
from fit3d_jax.weights import load_weights, save_params, write_state_dict
from fit3d_jax.weights.state_dicts import flax_to_official

pytestmark = pytest.mark.slow  # subprocess runs of whole jobs: the slow tier

REPO = Path(__file__).resolve().parents[1]
ROOM = dict(width=48, height=32, num_train=4, num_test=1, num_points=400)


def main(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m fit3d_jax.main`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "fit3d_jax.main", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def lift(scenes, out: Path, vit: Path, *extra: str) -> subprocess.CompletedProcess:
    return main("--config=configs/lift.py", f"--config.scenes={scenes}", f"--config.output_dir={out}", "--config.budget=quick",
                "--config.quick.recipe.iterations=12", "--config.quick.strategy.densify_from=8", "--config.quick.strategy.densify_until=8",
                f"--config.weights={vit}",
                "--config.progress=False", "--config.recipe.feature_dim=4", *extra)


def snapshot(root: Path, skip: Path) -> dict:
    """Every path below ``root`` outside ``skip``: (is a folder, size, modification time)."""
    state = {}
    for path in root.rglob("*"):
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        state[str(path.relative_to(root))] = (path.is_dir(), info.st_size if not path.is_dir() else 0, info.st_mtime_ns)
    return state


@pytest.fixture
def sandbox(tmp_path):
    """A user's folder (``tmp_path``) with an output folder ``out``; yields a check that nothing
    outside ``out`` changed."""
    out = tmp_path / "out"
    before = {}

    def unchanged():
        assert snapshot(tmp_path, out) == before, "files outside the output folder changed"

    def start():
        before.clear()
        before.update(snapshot(tmp_path, out))

    yield out, start, unchanged


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    return generate_room(tmp_path_factory.mktemp("rooms") / "room", seed=3, **ROOM)


def copy_room(room: Path, target: Path) -> Path:
    return Path(shutil.copytree(room, target))


def failed(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """The job's error line: exit status 1, no traceback, every fragment in it."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"rc {proc.returncode}: {text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in: {text[-3000:]}"
    return text


# ---------------------------------------------------------------------------------------------
# 1. Non-finite runs stop, naming stage, scene, step and quantity; nothing non-finite is written


def test_lift_that_goes_nan_stops_and_writes_no_results(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    scene = copy_room(room, tmp_path / "scene")
    start()
    text = failed(lift(scene, out, tiny_vit, "--config.quick.recipe.lr_features=1e38", "--config.log_every=1000",
                       "--config.checkpoint_every=1000"), "lift scene:", "not finite at step")
    step = int(text.split("not finite at step ")[1].split(";")[0])
    assert 1 <= step < 12  # the exact first step, though no step before the end was logged
    assert not (out / "scene" / "metrics.json").exists() and not (out / "scene" / "point_cloud.ply").exists()
    assert not (out / "store").exists() or not list((out / "store").glob("*.npz"))
    assert not (out / "scene" / "checkpoints").exists() or not [p for p in (out / "scene" / "checkpoints").iterdir() if p.name.isdigit()]
    unchanged()


def nan_store(store: Path, dim: int = 32, count: int = 300, poison: bool = True, weights: Path | None = None) -> None:
    """A store entry of random Gaussians in front of the camera (one NaN feature row if ``poison``),
    recorded as lifted from ``weights``."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (count, 3)) + [0, 0, 3]
    g, active = init_from_points(points, rng.integers(0, 256, (count, 3)), 8, count)
    g = g.replace(features=rng.normal(size=(count, 8)).astype(np.float32))
    if poison:
        g = g.replace(features=np.where(np.arange(count)[:, None] == 5, np.nan, g.features))
    decoder = rng.normal(0, 0.1, (3, 3, 8, dim)).astype(np.float32)
    image = store.parent / "view.png"
    cv2.imwrite(str(image), rng.integers(0, 256, (28, 42, 3), dtype=np.uint8))
    views = [dict(image=str(image), mask=None, width=42, height=28, fx=30.0, fy=30.0, cx=21.0, cy=14.0,
                  world_to_camera=np.eye(4).tolist(), image_digest=file_digest(image))] * 2
    record = {"fingerprint": "0" * 24, "description": "none"}
    if weights is not None:
        loaded = load_weights(str(weights), announce=False)
        record = {"fingerprint": loaded.fingerprint, "description": loaded.description}
    export.write_store_entry(store, "diverged", g, active, decoder, views, [], record)


def test_finetune_refuses_a_store_with_non_finite_values(tmp_path, sandbox):
    out, start, unchanged = sandbox
    nan_store(tmp_path / "store")
    with pytest.raises(SceneError, match=r"diverged\.npz: scene 'diverged' holds 8 non-finite values in 'features'"):
        load_store(tmp_path / "store")
    start()
    failed(main("--config=configs/finetune.py", f"--config.store={tmp_path / 'store'}", f"--config.output_dir={out}"),
           "config.store:", "scene 'diverged' holds", "non-finite")
    unchanged()


def test_finetune_that_goes_nan_stops_without_a_checkpoint(tiny_vit, tmp_path, sandbox):
    out, start, unchanged = sandbox
    nan_store(tmp_path / "store", poison=False, weights=tiny_vit)
    start()
    failed(main("--config=configs/finetune.py", f"--config.store={tmp_path / 'store'}", f"--config.output_dir={out}",
                f"--config.weights={tiny_vit}", "--config.recipe.learning_rate=1e30", "--config.recipe.clip_norm=1e30",
                "--config.recipe.epochs=6", "--config.log_every=100", "--config.checkpoint_every=100", "--config.progress=False",
                "--config.dtype=float32"), "finetune:", "not finite at step")
    assert not [p for p in (out / "checkpoints").glob("*") if p.name.isdigit()]
    unchanged()


def test_import_and_convert_refuse_non_finite_weights_naming_the_key(tmp_path, sandbox):
    out, start, unchanged = sandbox
    config = ViTConfig(embed_dim=384, depth=1, num_heads=6)
    params = init_params(config, seed=0)
    sd = flax_to_official(params)
    sd["blocks.0.mlp.fc1.weight"][3, 4] = np.nan
    write_state_dict(sd, tmp_path / "bad.safetensors")
    start()
    failed(main("--config=configs/import_weights.py", f"--config.weights={tmp_path / 'bad.safetensors'}",
                f"--config.output={out / 'ckpt'}"), "'blocks.0.mlp.fc1.weight' holds 1 non-finite values")
    failed(main("--config=configs/convert_torch.py", f"--config.checkpoint={tmp_path / 'bad.safetensors'}",
                f"--config.output={out / 'x.pth'}"), "'blocks.0.mlp.fc1.weight' holds 1 non-finite values")
    assert not (out / "ckpt").exists() and not (out / "x.pth").exists()
    unchanged()


# ---------------------------------------------------------------------------------------------
# 2. Scenes named alike, and resuming against another scene or recipe


def test_scenes_with_the_same_folder_name_get_distinct_outputs(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    a, b = copy_room(room, tmp_path / "A" / "scene"), copy_room(room, tmp_path / "B" / "scene")
    image = b / "images" / "frame_00000.png"
    cv2.imwrite(str(image), 255 - cv2.imread(str(image)))  # B is not A
    start()
    proc = lift(f"{a},{b}", out, tiny_vit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "written as 'A_scene'" in proc.stdout and "written as 'B_scene'" in proc.stdout
    for name in ("A_scene", "B_scene"):
        assert json.loads((out / name / "metrics.json").read_text())["iterations"] == 12
    stored = {s.name: s for s in load_store(out / "store")}
    assert set(stored) == {"A_scene", "B_scene"}
    assert stored["B_scene"].views[0].image == image  # B's Gaussians with B's views
    unchanged()


def test_resuming_against_another_scene_or_recipe_names_what_differs(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    scene = copy_room(room, tmp_path / "one" / "scene")
    assert lift(scene, out, tiny_vit).returncode == 0
    other = copy_room(room, tmp_path / "two" / "scene")
    cv2.imwrite(str(other / "images" / "frame_00001.png"), np.zeros((32, 48, 3), np.uint8))
    start()
    failed(lift(other, out, tiny_vit, "--config.quick.recipe.iterations=20"), "holds step 12 of another run", "fingerprint:", "scene:")
    failed(lift(scene, out, tiny_vit, "--config.quick.recipe.iterations=20", "--config.recipe.feature_dim=8"),
           "recipe.feature_dim: 4 -> 8")
    unchanged()


def test_target_cache_follows_the_images_content(room, tiny_vit, tmp_path):
    from fit3d_jax.lift.targets import cached_targets

    scene_dir = copy_room(room, tmp_path / "scene")
    weights = load_weights(str(tiny_vit), announce=False)
    scene = load_scene(scene_dir)
    views = list(scene.train + scene.test)
    first = cached_targets(tmp_path / "cache", views, weights, verify_pixels(scene))
    image = scene_dir / "images" / "frame_00000.png"
    cv2.imwrite(str(image), cv2.imread(str(image))[:, ::-1])  # replaced in place: same path, size and weights
    fresh = cached_targets(tmp_path / "cache", views, weights, verify_pixels(load_scene(scene_dir)))
    assert not np.array_equal(first[0], fresh[0]) and np.array_equal(first[1:], fresh[1:])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


# ---------------------------------------------------------------------------------------------
# 3. Nothing is deleted or replaced that the project did not write, or without overwrite


def test_import_weights_never_deletes_user_files(tmp_path, sandbox, tiny_vit):
    out, start, unchanged = sandbox
    users = tmp_path / "mine"
    (users / "model_config").mkdir(parents=True)
    (users / "thesis.tex").write_text("years of work")
    run = tmp_path / "run" / "checkpoints"
    shutil.copytree(tiny_vit, run / "100")  # a training run's checkpoints: N/model_config
    start()
    failed(main("--config=configs/import_weights.py", f"--config.weights={tiny_vit}", f"--config.output={users}"),
           "was not written by fit3d_jax")
    failed(main("--config=configs/import_weights.py", f"--config.weights={tiny_vit}", f"--config.output={run}"),
           "was not written by fit3d_jax")
    unchanged()
    assert main("--config=configs/import_weights.py", f"--config.weights={tiny_vit}", f"--config.output={out / 'w'}").returncode == 0
    failed(main("--config=configs/import_weights.py", f"--config.weights={tiny_vit}", f"--config.output={out / 'w'}"),
           "exists; set config.overwrite=True")
    proc = main("--config=configs/import_weights.py", f"--config.weights={tiny_vit}", f"--config.output={out / 'w'}",
                "--config.overwrite=True")
    assert proc.returncode == 0, proc.stderr[-2000:]
    unchanged()


def test_runs_never_write_into_a_folder_they_did_not_create(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    (out / "room").mkdir(parents=True)
    (out / "room" / "metrics.json").write_text("my own results")
    start()
    failed(lift(room, out, tiny_vit), f"{out / 'room'} holds files fit3d_jax did not write")
    failed(main("--config=configs/probe_synthetic.py", f"--config.output_dir={out / 'room'}"), "holds files fit3d_jax did not write")
    assert (out / "room" / "metrics.json").read_text() == "my own results"
    unchanged()


def test_convert_torch_does_not_overwrite_without_being_told(tmp_path, sandbox):
    out, start, unchanged = sandbox
    config = ViTConfig(embed_dim=384, depth=1, num_heads=6)  # the official format knows DINOv2 widths only
    vit = save_params(tmp_path / "vit", init_params(config, seed=0), config)
    out.mkdir()
    (out / "model.pth").write_bytes(b"someone's model")
    start()
    failed(main("--config=configs/convert_torch.py", f"--config.checkpoint={vit}", f"--config.output={out / 'model.pth'}"),
           "exists; set config.overwrite=True")
    assert (out / "model.pth").read_bytes() == b"someone's model"
    proc = main("--config=configs/convert_torch.py", f"--config.checkpoint={vit}", f"--config.output={out / 'model.pth'}",
                "--config.overwrite=True")
    assert proc.returncode == 0, proc.stderr[-2000:]
    unchanged()


def test_generate_rooms_checks_every_room_before_regenerating_any(sandbox):
    out, start, unchanged = sandbox
    common = ("--config=configs/generate_rooms.py", f"--config.output_dir={out}", "--config.num_rooms=2", "--config.width=32",
              "--config.height=24", "--config.num_train=2", "--config.num_test=1", "--config.num_points=50")
    assert main(*common, "--config.num_rooms=1").returncode == 0
    first = out / "room_0000" / "images" / "frame_00000.png"
    stamp = first.stat().st_mtime_ns
    (out / "room_0001").mkdir()
    (out / "room_0001" / "keep.txt").write_text("not a room")
    (out / ".room_0000.partial-999999").mkdir()  # a killed run's leftover (no such process)
    start()
    failed(main(*common, "--config.overwrite=True"), "room_0001 exists and is not a generated room")
    assert first.stat().st_mtime_ns == stamp and (out / "room_0001" / "keep.txt").read_text() == "not a room"
    shutil.rmtree(out / "room_0001")
    assert main(*common).returncode == 0
    assert not list(out.glob(".*partial*")), "a killed run's staging folder was left behind"
    unchanged()


# ---------------------------------------------------------------------------------------------
# 4. Every image decoded before any work, with training's decoder and orientation rule


def test_images_are_decoded_before_any_work(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    truncated = copy_room(room, tmp_path / "scenes" / "a_truncated_jpeg")
    image = truncated / "images" / "frame_00001.png"
    jpeg = image.with_suffix(".jpg")
    cv2.imwrite(str(jpeg), cv2.imread(str(image)))
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])  # OpenCV would decode half and grey the rest
    image.unlink()
    meta = json.loads((truncated / nerfstudio.TRANSFORMS).read_text())
    assert meta["frames"][1]["file_path"] == "frame_00001.png"
    meta["frames"][1]["file_path"] = "frame_00001.jpg"
    (truncated / nerfstudio.TRANSFORMS).write_text(json.dumps(meta))
    start()
    failed(lift(truncated, out, tiny_vit), "frame_00001.jpg: cannot decode the image")
    # A truncated PNG in the second scene of a folder: found before the first scene is lifted.
    good = copy_room(room, tmp_path / "folder" / "a_good")
    second = copy_room(room, tmp_path / "folder" / "b_broken")
    png = second / "images" / "frame_00001.png"
    png.write_bytes(png.read_bytes()[:-200])
    start()
    failed(lift(tmp_path / "folder", out, tiny_vit), "b_broken", "frame_00001.png: cannot decode the image")
    assert not (out / "a_good").exists() and good.is_dir()
    unchanged()


def _with_exif_orientation(path: Path, orientation: int) -> None:
    from PIL import Image

    with Image.open(path) as image:
        exif = image.getexif()
        exif[0x0112] = orientation
        image.convert("RGB").save(path.with_suffix(".jpg"), exif=exif, quality=95)


def test_rotated_and_transparent_images_are_refused(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    rotated = copy_room(room, tmp_path / "rotated")
    _with_exif_orientation(rotated / "images" / "frame_00001.png", 6)
    (rotated / "images" / "frame_00001.png").unlink()
    meta = json.loads((rotated / nerfstudio.TRANSFORMS).read_text())
    meta["frames"][1]["file_path"] = "frame_00001.jpg"
    (rotated / nerfstudio.TRANSFORMS).write_text(json.dumps(meta))
    transparent = copy_room(room, tmp_path / "transparent")
    path = transparent / "images" / "frame_00003.png"
    rgba = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2BGRA)
    rgba[:4, :4, 3] = 0
    cv2.imwrite(str(path), rgba)
    start()
    failed(lift(rotated, out, tiny_vit), "frame_00001.jpg: EXIF orientation 6")
    failed(lift(transparent, out, tiny_vit), "frame_00003.png: has transparent pixels")
    unchanged()


# ---------------------------------------------------------------------------------------------
# 6-9. Intrinsics, folders of scenes, paths leaving the output folder, explicit overrides


@pytest.mark.parametrize("field, value, fragment", [
    ("cx", 1e9, "frames[0].cx: principal point 1e+09 is far outside the 48-pixel image"),
    ("fl_x", 1e300, "fl_x: focal length 1e+300 gives a"),
    ("fl_x", 1e30, "fl_x: focal length 1e+30 gives a"),
])
def test_absurd_intrinsics_are_refused_naming_the_field(room, tiny_vit, sandbox, tmp_path, field, value, fragment):
    out, start, unchanged = sandbox
    scene = copy_room(room, tmp_path / "scene")
    meta = json.loads((scene / nerfstudio.TRANSFORMS).read_text())
    meta["frames"][0][field] = value
    (scene / nerfstudio.TRANSFORMS).write_text(json.dumps(meta))
    start()
    failed(lift(scene, out, tiny_vit), fragment)
    unchanged()


def test_a_folder_of_scenes_names_the_folders_that_are_not_scenes(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    folder = tmp_path / "scenes"
    copy_room(room, folder / "good")
    odd = copy_room(room, folder / "odd")
    (odd / nerfstudio.TRANSFORMS).rename(odd / "transforms.json")
    start()
    failed(lift(folder, out, tiny_vit), "odd: no transforms_train.json", "it has transforms.json", "skip_non_scenes")
    proc = lift(folder, out, tiny_vit, "--config.skip_non_scenes=True")
    assert proc.returncode == 0 and f"skipped {folder}/odd" in proc.stdout
    assert (out / "good" / "metrics.json").exists() and not (out / "odd").exists()
    unchanged()


def test_a_scene_path_with_dot_dot_stays_inside_the_output_folder(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    scene = copy_room(room, tmp_path / "data" / "scene")
    (tmp_path / "important.txt").write_text("do not touch")
    start()
    proc = lift(f"{scene}/images/..", out, tiny_vit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "scene" / "metrics.json").exists()
    unchanged()


def test_an_explicit_override_wins_over_the_cpu_preset(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    start()
    proc = main("--config=configs/lift.py", f"--config.scenes={room}", f"--config.output_dir={out}", "--config.budget=auto",
                "--config.recipe.iterations=9", "--config.quick.strategy.densify_from=6", "--config.quick.strategy.densify_until=6",
                f"--config.weights={tiny_vit}",
                "--config.progress=False", "--config.recipe.feature_dim=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "keeping recipe.iterations=9 as given (the preset has iterations=500)" in proc.stdout
    assert json.loads((out / "room" / "metrics.json").read_text())["iterations"] == 9
    unchanged()


# ---------------------------------------------------------------------------------------------
# Raw tracebacks that are clear errors, before any work


@pytest.mark.parametrize("override, fragment", [
    ("--config.checkpoint_every=0", "config.checkpoint_every=0 must be >= 1"),
    ("--config.checkpoint_every=-7", "config.checkpoint_every=-7 must be >= 1"),
    ("--config.log_every=0", "config.log_every=0 must be >= 1"),
    ("--config.recipe.lr_means=0", "config.recipe.lr_means=0.0 must be > 0"),
])
def test_bad_settings_are_errors_before_any_work(room, tiny_vit, sandbox, override, fragment):
    out, start, unchanged = sandbox
    start()
    failed(lift(room, out, tiny_vit, override), fragment)
    assert not (out / "room").exists()  # no targets were computed
    unchanged()


def test_an_unusable_output_folder_is_found_before_any_work(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    start()
    failed(lift(room, blocker, tiny_vit), "config.output_dir=", "is a file, not a folder")
    failed(lift(room, blocker / "below", tiny_vit), "config.output_dir=", "cannot be written")
    unchanged()


def test_damaged_checkpoint_and_cache_fall_back_or_recompute(room, tiny_vit, sandbox, tmp_path):
    out, start, unchanged = sandbox
    scene = copy_room(room, tmp_path / "scene")
    assert lift(scene, out, tiny_vit, "--config.checkpoint_every=6").returncode == 0  # steps 6 and 12
    for damaged in (out / "scene" / "checkpoints" / "12").rglob("*"):
        if damaged.is_file() and damaged.stat().st_size > 100:
            damaged.write_bytes(b"\0" * 10)
    cache = next((out / "scene" / "cache").glob("*.npy"))
    cache.write_bytes(cache.read_bytes()[:100])
    start()
    proc = lift(scene, out, tiny_vit, "--config.checkpoint_every=6", "--config.quick.recipe.iterations=14")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "checkpoint step 12" in proc.stdout and "damaged" in proc.stdout and "resuming from step 6" in proc.stdout
    assert "computing the targets again" in proc.stdout
    assert json.loads((out / "scene" / "metrics.json").read_text())["iterations"] == 14
    unchanged()


def test_a_truncated_store_entry_is_an_error_naming_it(tmp_path, sandbox):
    out, start, unchanged = sandbox
    nan_store(tmp_path / "store")
    entry = tmp_path / "store" / "diverged.npz"
    entry.write_bytes(entry.read_bytes()[:300])
    start()
    failed(main("--config=configs/finetune.py", f"--config.store={tmp_path / 'store'}", f"--config.output_dir={out}"),
           "diverged.npz: damaged or truncated store entry")
    unchanged()


# ---------------------------------------------------------------------------------------------
# What held before, kept as regression tests


def test_sigkill_during_checkpoint_writes_resumes_to_the_same_result(room, tiny_vit, tmp_path):
    """A run killed at arbitrary moments (checkpointing every step) resumes to the uninterrupted
    run's store, bit for bit."""
    args = ["--config.checkpoint_every=1", "--config.quick.recipe.iterations=40", "--config.quick.strategy.densify_from=30",
            "--config.quick.strategy.densify_until=30"]
    assert lift(room, tmp_path / "straight", tiny_vit, *args).returncode == 0
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "fit3d_jax.main", "--config=configs/lift.py", f"--config.scenes={room}",
           f"--config.output_dir={killed}", "--config.budget=quick", "--config.quick.strategy.densify_from=30",
           "--config.quick.strategy.densify_until=30",
           f"--config.weights={tiny_vit}",
           "--config.progress=False", "--config.recipe.feature_dim=4", *args]
    for delay in (12.0, 3.0):
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and not list((killed / "room" / "checkpoints").glob("[0-9]*")):
            time.sleep(0.05)
        time.sleep(delay * np.random.default_rng(int(delay)).uniform(0.05, 0.2))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=600).returncode == 0
    a, b = np.load(tmp_path / "straight" / "store" / "room.npz"), np.load(killed / "store" / "room.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_malicious_pickles_are_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from fit3d_jax.weights import WeightsError, load_weights

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"cls_token": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError):
        load_weights(tmp_path / "evil.pth", announce=False)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------
# 10. Issue #33: every job as careful as the lift (in process where the exit status is not the point)


def _config(name: str, **fields):
    config = configs_loader.load(name)
    for dotted, value in fields.items():
        *parents, leaf = dotted.split(".")
        section = config
        for part in parents:
            section = section[part]
        section[leaf] = value
    return config


def _photo(path: Path, seed: int) -> Path:
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (60, 90, 3)).astype(np.uint8))
    return path


def test_no_job_writes_into_its_inputs_over_other_outputs_or_below_a_file(tmp_path, tiny_vit):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("cat.jpg", "cat.png", "dog.png")):
        _photo(photos / name, i)
    before = snapshot(photos, tmp_path / "none")
    features = dict(image_dir=str(photos), weights=str(tiny_vit), short_side=28, num_clusters=2)
    for output in (photos, photos / "panels"):
        with pytest.raises(ConfigError, match="a job never writes into what it reads"):
            jobs.run(_config("features.py", output_dir=str(output), **features))
    assert snapshot(photos, tmp_path / "none") == before  # the user's photos, untouched
    jobs.run(_config("features.py", output_dir=str(tmp_path / "panels"), **features))
    assert sorted(p.name for p in (tmp_path / "panels").iterdir() if not p.name.startswith(".")) == [
        "cat.jpg.png", "cat.png.png", "dog.png"]  # same stems, distinct panels

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    (tmp_path / "release" / "data").mkdir(parents=True)
    (tmp_path / "release" / "splits").mkdir()
    jobs_below_a_file = {
        "features.py": dict(output_dir=str(blocker / "out"), **features),
        "generate_rooms.py": dict(output_dir=str(blocker / "out"), num_rooms=1),
        "import_weights.py": dict(weights=str(tiny_vit), output=str(blocker / "ckpt")),
        "convert_torch.py": dict(checkpoint=str(tiny_vit), output=str(blocker / "model.pth")),
        "prepare_scannetpp.py": dict(data_root=str(tmp_path / "release"), output_dir=str(blocker / "out")),
    }
    for name, fields in jobs_below_a_file.items():
        with pytest.raises(ConfigError, match="cannot be written|is a file, not a folder"):
            jobs.run(_config(name, **fields))
    assert blocker.read_text() == "x"


def test_settings_that_would_break_a_run_are_refused_or_noted(tiny_vit, capsys):
    refused = [
        ("finetune.py", {"recipe.clip_norm": -1.0}, "config.recipe.clip_norm=-1.0 must be >= 0"),
        ("finetune.py", {"recipe.weight_decay": -1e-4}, "config.recipe.weight_decay=-0.0001 must be >= 0"),
        ("finetune.py", {"recipe.flip_probability": 1.5}, "config.recipe.flip_probability=1.5 must be in [0, 1]"),
        ("probe_ade20k.py", {"augment.flip_prob": 2.0}, "config.augment.flip_prob=2.0 must be in [0, 1]"),
        ("probe_ade20k.py", {"augment.ratio_range": (2.0, 0.5)}, "config.augment.ratio_range=(2.0, 0.5) must be a pair"),
        ("lift.py", {"strategy.densify_until": 100}, "config.strategy.densify_until=100 is below config.strategy.densify_from=500"),
        ("lift.py", {"seed": -1}, "config.seed=-1 must be >= 0"),
        ("lift.py", {"quick.recipe.iterations": 0}, "config.quick.recipe.iterations=0 must be >= 1"),
        ("features.py", {"dtype": "float16"}, "config.dtype='float16' must be one of"),
    ]
    for name, fields, message in refused:
        with pytest.raises(ConfigError, match=re.escape(message)):
            jobs.run(_config(name, **fields))
    # clip_norm 0 means no clipping in stage II as in the probes (it used to freeze the model)
    params = {"w": np.ones(3, np.float32)}
    updates, _ = finetune_train.optimizer(finetune_train.Recipe(clip_norm=0.0)).update(
        {"w": np.full(3, 5.0, np.float32)}, finetune_train.optimizer(finetune_train.Recipe(clip_norm=0.0)).init(params), params)
    assert np.all(np.asarray(updates["w"]) < 0)
    notes = ranges.notes(_config("probe_ade20k.py", **{"schedule.iterations": 20}))
    assert any("warmup_iterations=1500 >= iterations=20" in n for n in notes) and any("log_every=50 > the run's 20 steps" in n for n in notes)


def _lifted_store(room: Path, vit: Path, out: Path) -> Path:
    short_fit(load_scene(room), load_weights(str(vit), announce=False), out, 6)
    return out / "store"


def test_stage_two_checks_its_store_before_the_first_step(room, tiny_vit, tmp_path):
    scene = copy_room(room, tmp_path / "scene")
    store = _lifted_store(scene, tiny_vit, tmp_path / "lift")
    entry = store / "scene.json"
    original = json.loads(entry.read_text())

    def refused(message: str, weights: Path = tiny_vit):
        out = tmp_path / "finetune"
        with pytest.raises(ConfigError, match=message):
            jobs.run(_config("finetune.py", store=str(store), weights=str(weights), output_dir=str(out), max_steps=1, progress=False))
        assert not (out / "checkpoints").exists()

    other = ViTConfig(embed_dim=32, depth=2, num_heads=2)  # the same width as tiny_vit, other weights
    refused("lifted from other weights", save_params(tmp_path / "other_vit", init_params(other, seed=9), other))
    for field, value, message in (("world_to_camera", [[float("nan")] * 4] * 3 + [[0, 0, 0, 1]], "world_to_camera: pose has non-finite values"),
                                  ("fx", -40.0, "field of view"), ("width", 24, "pixels, but w=24")):
        broken = json.loads(json.dumps(original))
        broken["views"][1][field] = value
        entry.write_text(json.dumps(broken))
        refused(message)
    entry.write_text(json.dumps(original))
    image = Path(original["views"][0]["image"])
    cv2.imwrite(str(image), 255 - cv2.imread(str(image)))  # the scene's image changed after the lift
    refused(f"{image}: changed since the lift")


def _rewritten(room: Path, target: Path, change) -> Path:
    """A copy of ``room`` whose views ``change(list of views)`` rewrote (the readers check it)."""
    copy_room(room, target)
    scene = load_scene(target)
    views = change(list(scene.train + scene.test), target)
    nerfstudio.write_scene(dataclasses.replace(scene, train=tuple(views[: len(scene.train)]), test=tuple(views[len(scene.train):])))
    return target


def test_masks_and_poses_that_would_make_results_meaningless_are_errors(room, tmp_path):
    def masked(values):
        def change(views, root):
            (root / "masks").mkdir(exist_ok=True)
            out = []
            for v in views:
                path = root / "masks" / f"{v.name}.png"
                cv2.imwrite(str(path), np.full((v.height, v.width, *values.shape), values, np.uint8))
                out.append(dataclasses.replace(v, mask_path=path))
            return out
        return change

    def posed(pose_of):
        def change(views, root):
            return [views[0], dataclasses.replace(views[1], world_to_camera=pose_of(views[1].world_to_camera, root)), *views[2:]]
        return change

    def translated(pose, root):  # the case: one training view moved by 1e4
        return pose + np.pad(np.array([[1e4], [0.0], [0.0]]), ((0, 1), (3, 0)))

    def outside_looking_out(pose, root):  # near the room (3 radii out), looking away from it
        points = load_scene(root).points
        centre = np.median(points, axis=0)
        out = np.array([1.0, 0.0, 0.0])
        position = centre + 3 * np.percentile(np.linalg.norm(points - centre, axis=1), 90) * out
        rotation = np.stack([np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]), out])  # camera x, y, z in the world
        return np.block([[rotation, -(rotation @ position)[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])

    cases = [
        (masked(np.array(0)), "the mask keeps 0.00%"),
        (masked(np.array([255, 255, 255, 128])), "the mask has transparent pixels"),
        (posed(translated), "farther from the sparse points"),
        (posed(outside_looking_out), "see fewer than 3 of the sparse points"),
    ]
    for i, (change, message) in enumerate(cases):
        folder = _rewritten(room, tmp_path / f"case{i}", change)
        with pytest.raises(SceneError, match=message):
            verify_pixels(load_scene(folder))
    ok = _rewritten(room, tmp_path / "ok", masked(np.array(255)))
    verify_pixels(load_scene(ok))  # a mask that keeps every pixel is fine


def test_probe_labels_and_depths_are_checked_before_training(tmp_path, tiny_vit):
    rooms = tmp_path / "rooms"
    for split, seed in (("train", 1), ("test", 2)):
        generate_room(rooms / split / f"room_{seed}", seed=seed, **ROOM)

    def probe(task: str, message: str):
        config = configs_loader.load("probe_synthetic.py", task)
        config.data.update(train=str(rooms / "train"), test=str(rooms / "test"))
        config.update(weights=str(tiny_vit), output_dir=str(tmp_path / "probe"), progress=False)
        config.schedule.iterations = 2
        with pytest.raises(ConfigError, match=message):
            jobs.run(config)
        assert not (tmp_path / "probe" / "checkpoints").exists()

    labels = next((rooms / "train" / "room_1" / "labels").glob("*.png"))
    original = labels.read_bytes()
    classes = json.loads((rooms / "train" / "room_1" / nerfstudio.CLASSES_FILE).read_text())
    for value, dtype in ((len(classes), np.uint8), (300, np.uint16)):  # one past the classes; beyond a byte
        cv2.imwrite(str(labels), np.full(cv2.imread(str(labels), cv2.IMREAD_UNCHANGED).shape, value, dtype))
        probe("segmentation", f"label values \\[{value}\\] are beyond the {len(classes)} classes")
        labels.write_bytes(original)
    depth = next((rooms / "test" / "room_2" / "depth").glob("*.png"))
    cv2.imwrite(str(depth), np.zeros(cv2.imread(str(depth), cv2.IMREAD_UNCHANGED).shape, np.uint16))
    probe("depth", "no pixel has a depth")


def test_a_second_run_into_a_busy_output_folder_is_refused(tmp_path, tiny_vit):
    folder = tmp_path / "busy"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", f"from fit3d_jax.harness import outputs; outputs.lock({str(folder)!r}, 'x'); "
                               "print('locked', flush=True); import time; time.sleep(120)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        photos = tmp_path / "photos"
        photos.mkdir()
        _photo(photos / "a.png", 0)
        config = _config("features.py", image_dir=str(photos), output_dir=str(folder), weights=str(tiny_vit), short_side=28)
        with pytest.raises(ConfigError, match=f"is in use by another run \\(pid {holder.pid} on .*, started "):
            jobs.run(config)
    finally:
        holder.kill()
        holder.wait()
    jobs.run(config)  # the lock went with its process


def test_conditions_a_user_can_cause_end_in_one_line_and_a_bug_says_so(room, tiny_vit, tmp_path):
    store = _lifted_store(copy_room(room, tmp_path / "scene"), tiny_vit, tmp_path / "lift")
    failed(main("--config=configs/finetune.py", f"--config.store={store}", f"--config.weights={tiny_vit}",
                f"--config.output_dir={tmp_path / 'f'}", "--config.recipe.batch_size=99"),
           "config.recipe.batch_size=99 is more than the store's 4 training views")
    failed(main("--config=configs/lift.py", "--config.seed=-1"), "config.seed=-1 must be >= 0")
    failed(main("--config=configs/convert_torch.py", f"--config.checkpoint={tiny_vit}", f"--config.output={tmp_path / 'c' / 'm.pth'}",
                f"--config.timm_output={tmp_path / 'c' / 't.pth'}"), "heads of 16 channels", "nothing was written")
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix == ".pth"]
    garbage = tmp_path / "kernels"
    garbage.mkdir()
    (garbage / "libfit3d_ffi_cpu.so").write_text("not a library")
    info = subprocess.run([sys.executable, "-m", "fit3d_jax.kernels", "info"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "FIT3D_KERNELS_DIR": str(garbage)})
    assert info.returncode == 0 and "Traceback" not in info.stderr and f"passed over {garbage}" in info.stderr
    bug = subprocess.run([sys.executable, "-c", "import sys, fit3d_jax.jobs as j; j.run = lambda c: 1 / 0; "
                          "from fit3d_jax.main import cli; sys.argv = ['main', '--config=configs/features.py']; cli()"],
                         cwd=REPO, capture_output=True, text=True)
    assert bug.returncode == 1 and "ZeroDivisionError" in bug.stderr and "this is a bug in fit3d_jax" in bug.stderr


def test_what_a_newcomer_reads_is_what_happened(tmp_path, capsys):
    assert finetune_job.loss_summary({"logged_steps": [3, 3], "first_logged_loss": 0.6, "last_logged_loss": 0.6}) == \
        "loss 0.6000 at step 3 (the one logged step this run)"
    assert finetune_job.loss_summary({"logged_steps": [50, 100], "first_logged_loss": 0.6, "last_logged_loss": 0.5}) == \
        "loss 0.6000 (step 50) -> 0.5000 (step 100)"
    rng = np.random.default_rng(0)
    before = rng.normal(size=(6, 8, 16)).astype(np.float32)
    after = before.copy()
    after[:2] += 3 * rng.normal(size=(2, 8, 16)).astype(np.float32)  # the fine-tuning moved two rows of patches
    panel = viz.feature_panels(np.zeros((6, 8, 3), np.uint8), [before, after], 2, jax.random.key(0))
    first, second = panel[:, 8 + 8: 16 + 8], panel[:, 16 + 16: 24 + 16]  # image | PCA | PCA | K-means | K-means, 8 px gaps
    np.testing.assert_array_equal(first[2:], second[2:])  # one basis: unchanged patches keep their colours
    with TrainLoop("job", tmp_path, total=4, start=0, log_every=2, checkpoint_every=99, progress=False, guarded=()) as loop:
        for step in range(1, 5):
            loop.step_done(step, guard.NonFinite.none(), {"loss": 0.5})
    assert "job: step 2/4, loss 0.5" in capsys.readouterr().out and [r["step"] for r in loop.logged] == [2, 4]
