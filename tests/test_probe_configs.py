"""Every probe config runs on a fixture in its dataset's real layout (tests/eval_layouts.py), with
its own pipeline (live augmentation, its test-time inference) and the concat assembly of two
models, for a short schedule on the CPU, and learns: segmentation beats the majority class,
depth beats the best constant depth."""

from __future__ import annotations

import json

import numpy as np
import pytest

import configs_loader
import eval_layouts as layouts
from fit3d_jax.jobs import probe as probe_job
from fit3d_jax.models.dinov2 import ViTConfig, init_params
from fit3d_jax.weights import save_params

VIT = ViTConfig(embed_dim=48, depth=2, num_heads=2)

# config file, argument, the fixture writer, the folder data.data_dir names (relative to the fixture root)
CASES = {
    "scannetpp": ("probe_scannetpp.py", None, lambda r: layouts.segmentation_folders(
        r, 1, suffix=".JPG", classes=[0, 7, 33, 64, 99], size=(292, 438))["validation"], "."),
    "scannetpp_depth": ("probe_scannetpp.py", "depth", lambda r: layouts.depth_splits(
        r, 2, names=("scannetpp_train.txt", "scannetpp_val.txt"), size=(292, 438), rgb_suffix=".JPG",
        metres=4.0)["scannetpp_val.txt"], "."),
    "scannet": ("probe_scannet.py", None, lambda r: layouts.segmentation_folders(
        r, 3, suffix=".jpg", classes=[0, 4, 9, 21, 39], size=(240, 320))["validation"], "."),
    "scannet_depth": ("probe_scannet.py", "depth", lambda r: layouts.depth_splits(
        r, 4, names=("scannet_train.txt", "scannet_val.txt"), size=(480, 640))["scannet_val.txt"], "."),
    "nyu": ("probe_nyu.py", None, lambda r: layouts.segmentation_folders(
        r, 5, suffix=".png", classes=[0, 4, 7, 11, 12], size=(240, 320))["validation"], "."),
    "nyu_depth": ("probe_nyu.py", "depth", lambda r: layouts.depth_splits(
        r, 6, names=("nyu_train.txt", "nyu_test.txt"), size=(480, 640))["nyu_test.txt"], "."),
    "ade20k": ("probe_ade20k.py", None, lambda r: layouts.segmentation_folders(
        r / "ADEChallengeData2016", 7, suffix=".jpg", classes=[0, 2, 14, 80, 149], size=(240, 320))["validation"], "."),
    "voc": ("probe_voc.py", None, lambda r: layouts.voc(r / "VOC2012", 8)["val"], "VOC2012"),
    "kitti": ("probe_kitti.py", None, lambda r: layouts.kitti(r, 9)["kitti_eigen_test.txt"], "."),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_models")
    for name, seed in (("original", 1), ("finetuned", 2)):
        save_params(root / name, init_params(VIT, seed=seed), VIT)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_learns_on_its_layout(case, models, tmp_path):
    file_name, argument, write, data_dir = CASES[case]
    truth = write(tmp_path / "data")
    config = configs_loader.load(file_name, argument)
    depth = config.task == "depth"
    config.data.data_dir = str(tmp_path / "data" / data_dir)
    config.weights, config.finetuned = str(models / "original"), str(models / "finetuned")
    config.output_dir, config.progress = str(tmp_path / "out"), False
    # Shorter, and at a third of the crop size, for a CPU (the pipelines are unchanged).
    config.schedule.update(iterations=60, warmup_iterations=5, batch_size=4)
    config.evaluation.num_visualize = 1
    if depth:
        config.schedule.learning_rate = 1e-2
        config.protocol.sigloss_warmup = 10
        config.augment.crop = (160, 224)
    else:
        config.augment.update(crop=(160, 160), scale=(640, 160))
        config.evaluation.update(crop=(160, 160), stride=(107, 107))
    probe_job.run(config)
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["assembly"] == "concat" and record["metrics"]["test_images"] == len(truth)
    metrics = record["metrics"]
    if depth:
        # The constant that is best in hindsight for the test images, scored per image as the metrics do.
        values = np.concatenate([t[t > 0] for t in truth])
        constant = float(np.mean(values))
        constant_rmse = np.mean([np.sqrt(np.mean((t[t > 0] - constant) ** 2)) for t in truth])
        assert metrics["rmse"] < 0.8 * constant_rmse, (metrics, constant_rmse)
    else:
        labels = np.concatenate([t[t != 255] for t in truth])
        majority = 100 * np.bincount(labels).max() / labels.size
        assert metrics["aAcc"] > majority + 10, (metrics, majority)
