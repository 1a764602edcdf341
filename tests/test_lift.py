"""Stage I end to end on a tiny generated room with a tiny random ViT: losses fall, a killed run
resumes to the same result, outputs are written, the job runs from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import short_fit
from fit3d_jax.lift import export, trainer
from fit3d_jax.scenes import load_scene
from fit3d_jax.scenes.synthetic import generate_room
from fit3d_jax.weights import load_weights

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    path = tmp_path_factory.mktemp("rooms") / "room"
    generate_room(path, seed=7, width=64, height=48, num_train=6, num_test=2)
    return load_scene(path)


@pytest.mark.slow
def test_short_fit_lowers_both_losses(room, tiny_vit, tmp_path):
    weights = load_weights(str(tiny_vit), announce=False)
    metrics = short_fit(room, weights, tmp_path, 120, log_every=1)
    log = [json.loads(line) for line in (tmp_path / room.name / "train_log.jsonl").read_text().splitlines()]
    first, last = log[:20], log[-20:]
    mean = lambda rows, k: np.mean([r[k] for r in rows])
    assert mean(last, "l1") < 0.8 * mean(first, "l1"), "RGB loss did not fall"
    assert mean(last, "feature_l1") < 0.9 * mean(first, "feature_l1"), "feature loss did not fall"
    assert log[-1]["gaussians"] != log[0]["gaussians"], "densification/pruning never changed the Gaussians"
    for key in ("psnr", "ssim", "feature_l1", "feature_cosine", "gaussians", "wall_seconds", "peak_host_rss_gb"):
        assert key in metrics
    assert np.isfinite(metrics["psnr"]) and 0 <= metrics["ssim"] <= 1


def test_outputs_are_written(room, tiny_vit, tmp_path):
    weights = load_weights(str(tiny_vit), announce=False)
    metrics = short_fit(room, weights, tmp_path, 20)
    out = tmp_path / room.name
    cols = export.read_ply(out / "point_cloud.ply")
    assert len(cols["x"]) == metrics["gaussians"] and "feat_7" in cols and "f_rest_44" in cols
    renders = sorted((out / "renders").glob("*.png"))
    assert [p.stem for p in renders] == sorted(v.name for v in room.test)
    store = np.load(tmp_path / "store" / f"{room.name}.npz")
    assert store["means"].shape == (metrics["gaussians"], 3) and store["decoder"].shape == (3, 3, 8, 32)
    np.testing.assert_allclose(np.linalg.norm(store["quats"], axis=1), 1.0, rtol=1e-5)
    views = json.loads((tmp_path / "store" / f"{room.name}.json").read_text())["views"]
    assert len(views) == len(room.train)
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 20


@pytest.fixture(scope="module")
def straight_run(room, tiny_vit, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    short_fit(room, load_weights(str(tiny_vit), announce=False), out, 40, checkpoint_every=15)
    return out


# Resumed from iteration 15, before the compaction at 30, or from 30.
@pytest.mark.parametrize("kill_at", [21, pytest.param(35, marks=pytest.mark.slow)])
def test_killed_run_resumes_to_the_same_result(room, tiny_vit, straight_run, kill_at, tmp_path, monkeypatch):
    weights = load_weights(str(tiny_vit), announce=False)
    straight = straight_run
    resumed = tmp_path / "resumed"
    real = trainer.view_for_iteration

    def killed(iteration, *args):
        if iteration == kill_at:
            raise KeyboardInterrupt("simulated kill")
        return real(iteration, *args)

    monkeypatch.setattr(trainer, "view_for_iteration", killed)
    with pytest.raises(KeyboardInterrupt):
        short_fit(room, weights, resumed, 40, checkpoint_every=15)  # checkpoints at 15 and 30
    monkeypatch.setattr(trainer, "view_for_iteration", real)
    short_fit(room, weights, resumed, 40, checkpoint_every=15)

    a = np.load(straight / "store" / f"{room.name}.npz")
    b = np.load(resumed / "store" / f"{room.name}.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow
def test_lift_job_runs_from_the_command_line(tiny_vit, tmp_path):
    cmd = [
        sys.executable, "-m", "fit3d_jax.main", "--config=configs/lift.py",
        f"--config.output_dir={tmp_path / 'out'}", f"--config.room.output_dir={tmp_path / 'rooms'}",
        "--config.room.width=48", "--config.room.height=32", "--config.room.num_train=4", "--config.room.num_test=1",
        "--config.quick.recipe.iterations=10", "--config.budget=quick", f"--config.weights={tiny_vit}", "--config.progress=False",
        "--config.recipe.feature_dim=4",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PSNR" in proc.stdout and "outputs:" in proc.stdout
    metrics = json.loads(next((tmp_path / "out").glob("*/metrics.json")).read_text())
    assert metrics["iterations"] == 10


@pytest.mark.slow
def test_bad_budget_and_scene_are_config_errors(tmp_path):
    cmd = [sys.executable, "-m", "fit3d_jax.main", "--config=configs/lift.py", "--config.budget=fast"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "config.budget" in proc.stderr + proc.stdout
    cmd = [sys.executable, "-m", "fit3d_jax.main", "--config=configs/lift.py", f"--config.scenes={tmp_path / 'nowhere'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "config.scenes" in proc.stderr + proc.stdout
