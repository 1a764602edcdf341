"""One lift for several backbones (issue #32): on the CPU, a lift of two backbones of different
patch sizes (14 and 16) and widths equals the two single-backbone lifts it replaces (the geometry
bit for bit, each backbone's features and decoder within float rounding); each backbone's store
has the single-backbone format and its weights, stage II runs on each, a store is refused with
other weights, and a killed two-backbone lift resumes to the uninterrupted result."""

from __future__ import annotations

import json

import numpy as np
import pytest

import configs_loader
from conftest import short_fit
from fit3d_jax.errors import ConfigError
from fit3d_jax.finetune import store
from fit3d_jax.jobs import finetune as finetune_job
from fit3d_jax.jobs import lift as lift_job
from fit3d_jax.lift import export, trainer
from fit3d_jax.lift.backbones import Backbone
from fit3d_jax.models.dinov2 import ViTConfig, init_params
from fit3d_jax.scenes import load_scene
from fit3d_jax.scenes.synthetic import generate_room
from fit3d_jax.weights import load_weights, save_params

ITERATIONS = 40  # densification from 4 to 30 every 10, compaction at 30 (conftest.short_strategy)
GEOMETRY = ("means", "scales", "quats", "opacities")
CONFIGS = {"a": ViTConfig(embed_dim=32, depth=2, num_heads=2),  # patch 14
           "b": ViTConfig(embed_dim=48, depth=1, num_heads=2, patch_size=16)}


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    path = tmp_path_factory.mktemp("rooms") / "room"
    generate_room(path, seed=11, width=70, height=50, num_train=6, num_test=2)
    return load_scene(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two random ViTs as Orbax checkpoints: their paths and loaded weights by name."""
    root = tmp_path_factory.mktemp("vits")
    for i, (name, config) in enumerate(CONFIGS.items()):
        save_params(root / name, init_params(config, seed=i), config)
    return {name: (root / name, load_weights(str(root / name), announce=False)) for name in CONFIGS}


@pytest.fixture(scope="module")
def lifts(room, models, tmp_path_factory):
    """Each backbone lifted alone, and both in one lift: output folders by name ('both')."""
    out = {}
    for name, (_, weights) in models.items():
        out[name] = tmp_path_factory.mktemp(f"alone_{name}")
        short_fit(room, weights, out[name], ITERATIONS, checkpoint_every=15)
    out["both"] = tmp_path_factory.mktemp("both")
    short_fit(room, [Backbone(n, w) for n, (_, w) in models.items()], out["both"], ITERATIONS, checkpoint_every=15)
    return out


def _entry(folder, scene):
    with np.load(folder / f"{scene}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_two_backbones_lift_as_each_alone(room, lifts, models):
    for name in models:
        alone, together = _entry(lifts[name] / "store", room.name), _entry(lifts["both"] / "store" / name, room.name)
        for key in GEOMETRY:
            np.testing.assert_array_equal(together[key], alone[key], err_msg=f"{name}: {key}")
        for key in ("features", "decoder"):
            assert together[key].shape == alone[key].shape, key
            np.testing.assert_allclose(together[key], alone[key], rtol=1e-5, atol=1e-6 * np.abs(alone[key]).max(), err_msg=f"{name}: {key}")
        assert np.abs(alone["features"]).max() > 0, "the features never moved: the comparison would be void"
        single = json.loads((lifts[name] / room.name / "metrics.json").read_text())
        both = json.loads((lifts["both"] / room.name / "metrics.json").read_text())
        assert both["gaussians"] == single["gaussians"] and both["psnr"] == single["psnr"]
        for metric in ("feature_l1", "feature_cosine"):
            assert both[f"{name}/{metric}"] == pytest.approx(single[metric], rel=1e-4), metric
    a, b = (_entry(lifts["both"] / "store" / n, room.name) for n in models)
    assert a["decoder"].shape == (3, 3, 8, 32) and b["decoder"].shape == (3, 3, 8, 48)
    targets = {t.shape[1:] for t in map(np.load, (lifts["both"] / room.name / "cache").glob("*.npy"))}
    assert targets == {(3, 5, 32), (3, 4, 48)}, targets  # 50x70 resized down to 42x70 (patch 14) and 48x64 (patch 16)


@pytest.mark.slow
def test_each_backbone_has_its_own_outputs_in_the_single_format(room, lifts, models):
    scene = lifts["both"] / room.name
    for name, (_, weights) in models.items():
        entries = store.load_store(lifts["both"] / "store" / name)
        assert [s.name for s in entries] == [room.name]
        assert entries[0].weights == {"fingerprint": weights.fingerprint, "description": weights.description}
        assert entries[0].features.shape[1] == 8 and entries[0].target_dim == CONFIGS[name].embed_dim
        ply = export.read_ply(scene / name / "point_cloud.ply")
        assert len(ply["x"]) == len(entries[0].means) and "feat_7" in ply and "feat_8" not in ply
        assert sorted(p.stem for p in (scene / name / "renders").glob("*.png")) == sorted(v.name for v in room.test)
        alone = store.load_store(lifts[name] / "store")[0]
        assert [v.image for v in entries[0].views] == [v.image for v in alone.views]
    log = [json.loads(line) for line in (scene / "train_log.jsonl").read_text().splitlines()]
    assert {"a/feature_l1", "b/feature_l1", "l1", "ssim", "loss"} <= set(log[-1])
    with pytest.raises(store.SceneError, match="holds the stores of a multi-backbone lift \\(a, b\\)"):
        store.load_store(lifts["both"] / "store")


def _finetune_config(store_dir, weights_dir, out):
    return configs_loader.with_fields("finetune.py", store=str(store_dir), weights=str(weights_dir), output_dir=str(out),
                                      max_steps=2, progress=False, dtype="float32", compare_views=1)


@pytest.mark.slow
def test_stage_two_takes_each_store_with_its_weights_only(lifts, models, tmp_path):
    for name, (path, _) in models.items():
        finetune_job.run(_finetune_config(lifts["both"] / "store" / name, path, tmp_path / name))
        assert (tmp_path / name / "checkpoints").is_dir() and list((tmp_path / name / "compare").glob("*.png"))
    with pytest.raises(ConfigError, match="lifted from other weights.*store/<name>"):
        finetune_job.run(_finetune_config(lifts["both"] / "store" / "a", models["b"][0], tmp_path / "mismatch"))
    assert not (tmp_path / "mismatch" / "checkpoints").exists()


@pytest.mark.slow
def test_a_killed_two_backbone_lift_resumes_to_the_same_result(room, lifts, models, tmp_path, monkeypatch):
    backbones = [Backbone(n, w) for n, (_, w) in models.items()]
    real = trainer.view_for_iteration

    def killed(iteration, *args):
        if iteration == 21:
            raise KeyboardInterrupt("simulated kill")
        return real(iteration, *args)

    monkeypatch.setattr(trainer, "view_for_iteration", killed)
    with pytest.raises(KeyboardInterrupt):
        short_fit(room, backbones, tmp_path, ITERATIONS, checkpoint_every=15)
    monkeypatch.setattr(trainer, "view_for_iteration", real)
    short_fit(room, backbones, tmp_path, ITERATIONS, checkpoint_every=15)
    for name in models:
        straight, resumed = _entry(lifts["both"] / "store" / name, room.name), _entry(tmp_path / "store" / name, room.name)
        for key in straight:
            np.testing.assert_array_equal(resumed[key], straight[key], err_msg=f"{name}: {key}")


def test_the_job_reads_backbones_and_refuses_bad_ones(room, models, tmp_path):
    (a, _), (b, _) = models["a"], models["b"]
    config = configs_loader.with_fields("lift.py", scenes=str(room.root), output_dir=str(tmp_path / "out"), budget="quick",
                                        progress=False, backbones=f"a={a}, b={b}")
    config.quick.recipe.iterations = 3
    config.recipe.feature_dim = 4
    lift_job.run(config)
    metrics = json.loads((tmp_path / "out" / room.name / "metrics.json").read_text())
    assert {"a/feature_cosine", "b/feature_cosine", "a/weights", "b/weights"} <= set(metrics)
    assert sorted(p.name for p in (tmp_path / "out" / "store").iterdir() if p.is_dir()) == ["a", "b"]
    for spec, message in ((f"a={a},{b}", "is not name=weights"), (f"a={a},a={b}", r"names \['a'\] are given more than once"),
                          (f"cache={a},b={b}", "'cache' is reserved"), (f"dinov2_small={a}", "not vit_small_patch14_dinov2"),
                          ("a=/nowhere/x.pth", "config.backbones a='/nowhere/x.pth'")):
        config.backbones = spec
        with pytest.raises(ConfigError, match=message):
            lift_job.run(config)
