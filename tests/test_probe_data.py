"""Probe datasets: fixtures written in the layouts FiT3D's evaluation reads (mmseg folders for
ScanNet++, ScanNet, NYUv2 and ADE20K; VOC palette PNGs; the depth toolbox's split files for NYUv2,
ScanNet and KITTI, with their depth scales, 'None' lines and leading slashes), the tfds-backed
loaders under tfds.testing.mock_data with the real feature specs, scene datasets from generated
rooms, and their errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import eval_layouts as layouts
from fit3d_jax.probe.datasets import DatasetError, files, load_dataset, tfds_sets
from fit3d_jax.probe.metrics import IGNORE_INDEX
from fit3d_jax.scenes.synthetic import CLASSES, generate_room


def _mock(records_by_split):
    def source(builder, split, **_):
        return records_by_split[(builder.name, split)]

    return tfds.testing.mock_data(num_examples=1, as_data_source_fn=source)


def _ade_record(rng, height, width, annotation_size=None):
    ah, aw = annotation_size or (height, width)
    annotation = np.zeros((ah, aw, 3), np.uint8)
    annotation[..., 0] = rng.integers(0, 151, (ah, aw))
    annotation[..., 1:] = rng.integers(0, 255, (ah, aw, 2))  # instance channels: must not leak into labels
    return {"image": rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "annotation": annotation}


def test_ade20k_reduces_zero_label(tmp_path):
    rng = np.random.default_rng(0)
    train = [_ade_record(rng, 31, 47), _ade_record(rng, 20, 18)]
    test = [_ade_record(rng, 25, 33)]
    with _mock({("scene_parse150", "train"): train, ("scene_parse150", "test"): test}):
        dataset = tfds_sets.ade20k_tfds(str(tmp_path))
        assert (len(dataset.train), len(dataset.test), dataset.num_classes) == (2, 1, 150)
        for i, record in enumerate(train):
            example = dataset.train[i]
            raw = record["annotation"][..., 0].astype(np.int32)
            np.testing.assert_array_equal(example.target, np.where(raw == 0, IGNORE_INDEX, raw - 1))
            np.testing.assert_array_equal(example.image, record["image"])
        assert dataset.test[0].target.max() <= 149 or (dataset.test[0].target == IGNORE_INDEX).any()
        with pytest.raises(IndexError):
            dataset.test[1]


def test_ade20k_mismatched_annotation_is_an_error(tmp_path):
    rng = np.random.default_rng(1)
    bad = [_ade_record(rng, 30, 40, annotation_size=(30, 41))]
    with _mock({("scene_parse150", "train"): bad, ("scene_parse150", "test"): bad}):
        with pytest.raises(DatasetError, match=r"scene_parse150\[train\]\[0\].*differ"):
            tfds_sets.ade20k_tfds(str(tmp_path)).train[0]
    wrong_dtype = [{"image": np.zeros((4, 4, 3), np.float32), "annotation": np.zeros((4, 4, 3), np.uint8)}]
    with _mock({("scene_parse150", "train"): wrong_dtype, ("scene_parse150", "test"): wrong_dtype}):
        with pytest.raises(DatasetError, match="'image' must be uint8"):
            tfds_sets.ade20k_tfds(str(tmp_path)).train[0]


def test_nyu_depth_reads_float16_metres_and_eigen_crop(tmp_path):
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.5, 9.0, (480, 640)).astype(np.float16)
    depth[0, 0] = np.nan
    record = {"image": rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), "depth": depth}
    with _mock({("nyu_depth_v2", "train"): [record], ("nyu_depth_v2", "validation"): [record, record]}):
        dataset = tfds_sets.nyu_depth_tfds(str(tmp_path))
        example = dataset.test[1]
    assert example.target.dtype == np.float32 and example.target[0, 0] == 0  # NaN = no measurement
    np.testing.assert_array_equal(example.target[1:], depth[1:].astype(np.float32))
    with _mock({("nyu_depth_v2", "train"): [record], ("nyu_depth_v2", "validation"): [record]}):
        train = tfds_sets.nyu_depth_tfds(str(tmp_path)).train[0]  # NYUCrop on training frames
    np.testing.assert_array_equal(train.target, depth[45:472, 43:608].astype(np.float32))
    crop = dataset.eval_crop(480, 640)
    assert crop.sum() == (471 - 45) * (601 - 41) and crop[45, 41] and not crop[44, 41] and not crop[45, 601]
    with pytest.raises(DatasetError, match="480x640"):
        dataset.eval_crop(240, 320)


def test_missing_tfds_dataset_says_how_to_build_it(tmp_path):
    with pytest.raises(DatasetError, match=r"tfds build scene_parse150 --file_format=array_record --data_dir=" + str(tmp_path)):
        tfds_sets.ade20k_tfds(str(tmp_path))
    with pytest.raises(DatasetError, match="nyu_depth_v2"):
        load_dataset(ml_collections.ConfigDict({"name": "nyu_depth_tfds", "data_dir": str(tmp_path)}), "depth")


def test_load_dataset_checks_name_and_task(tmp_path):
    with pytest.raises(DatasetError, match="not one of"):
        load_dataset(ml_collections.ConfigDict({"name": "coco"}), "segmentation")
    with pytest.raises(DatasetError, match="is for segmentation"):
        load_dataset(ml_collections.ConfigDict({"name": "voc", "data_dir": str(tmp_path)}), "depth")
    with pytest.raises(DatasetError, match="config.data"):
        load_dataset(ml_collections.ConfigDict({"name": "voc", "data_dir": str(tmp_path), "colour": 1}), "segmentation")


def _write_voc(root: Path, rng, ids, aug=False):
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    labels = {}
    for name in ids:
        h, w = rng.integers(20, 40, 2)
        cv2.imwrite(str(base / "JPEGImages" / f"{name}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        label = rng.integers(0, 21, (h, w)).astype(np.uint8)
        label[0] = 255  # boundary
        png = Image.fromarray(label, mode="P")
        png.putpalette(list(rng.integers(0, 255, 768, dtype=np.uint8)))
        png.save(base / "SegmentationClass" / f"{name}.png")
        labels[name] = label
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:-1]) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text(ids[-1] + "\n")
    return base, labels


def test_voc_reads_palette_indices(tmp_path):
    rng = np.random.default_rng(3)
    base, labels = _write_voc(tmp_path, rng, ["2007_000032", "2007_000039", "2008_000001"])
    dataset = files.voc(str(tmp_path))
    assert (len(dataset.train), len(dataset.test), dataset.num_classes) == (2, 1, 21)
    example = dataset.test[0]
    np.testing.assert_array_equal(example.target, labels["2008_000001"].astype(np.int32))
    assert example.image.shape[:2] == example.target.shape
    # A colour-coded PNG in place of the palette one is caught, naming the file.
    Image.fromarray(np.full((25, 25, 3), 128, np.uint8)).convert("L").point(lambda v: 77).save(base / "SegmentationClass" / "2007_000032.png")
    cv2.imwrite(str(base / "JPEGImages" / "2007_000032.jpg"), np.zeros((25, 25, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"2007_000032.png: label values \[77\]"):
        dataset.train[0]
    (base / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(DatasetError, match="2007_000039.jpg"):
        dataset.train[1]


def test_voc_missing_layout_is_explained(tmp_path):
    with pytest.raises(DatasetError, match="VOCdevkit/VOC2012/JPEGImages"):
        files.voc(str(tmp_path))
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DatasetError, match="train.txt: split file not found"):
        files.voc(str(tmp_path))


def _write_kitti(root: Path, rng, frames):
    lines = []
    depths = {}
    for k in range(frames):
        image = root / "input" / "2011_09_26" / "2011_09_26_drive_0002_sync" / "image_02" / "data" / f"{k:010d}.png"
        depth = root / "gt_depth" / "2011_09_26_drive_0002_sync" / "proj_depth" / "groundtruth" / "image_02" / f"{k:010d}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        depth.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), rng.integers(0, 255, (375, 1242, 3), dtype=np.uint8))
        raw = (rng.uniform(0, 80, (375, 1242)) * 256).astype(np.uint16)
        raw[rng.uniform(size=raw.shape) < 0.9] = 0  # sparse LiDAR
        cv2.imwrite(str(depth), raw)
        depths[k] = raw
        lines.append(f"{image.relative_to(root / 'input')} {depth.relative_to(root / 'gt_depth')} 721.5377")
    lines.append("2011_09_26/2011_09_26_drive_0002_sync/image_02/data/extra.png None 721.5377")  # no ground truth: skipped
    for name in ("kitti_eigen_train.txt", "kitti_eigen_test.txt"):
        (root / name).write_text("\n".join(lines) + "\n")
    return depths, depth.parent


def test_kitti_kb_crop_and_garg_crop(tmp_path):
    rng = np.random.default_rng(4)
    depths, _ = _write_kitti(tmp_path, rng, 2)
    dataset = files.kitti(str(tmp_path))  # FiT3D's split names and input/, gt_depth/
    assert len(dataset.train) == 2 and dataset.max_depth == 80.0
    example = dataset.test[1]
    assert example.image.shape == (352, 1216, 3) and example.target.shape == (352, 1216)
    top, left = 375 - 352, (1242 - 1216) // 2
    np.testing.assert_allclose(example.target, depths[1][top:, left : left + 1216].astype(np.float32) / 256)
    crop = dataset.eval_crop(352, 1216)
    rows, cols = np.nonzero(crop)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (
        int(0.40810811 * 352), int(0.99189189 * 352), int(0.03594771 * 1216), int(0.96405229 * 1216))


def test_kitti_bad_inputs(tmp_path):
    rng = np.random.default_rng(5)
    _, depth_folder = _write_kitti(tmp_path, rng, 1)
    (tmp_path / "bad.txt").write_text("only_one_field\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: expected"):
        files.kitti(str(tmp_path), "bad.txt")
    cv2.imwrite(str(depth_folder / "0000000000.png"), np.zeros((375, 1242), np.uint8))
    with pytest.raises(DatasetError, match="0000000000.png: .*uint16"):
        files.kitti(str(tmp_path)).train[0]
    with pytest.raises(DatasetError, match="nope.txt: split file not found"):
        files.kitti(str(tmp_path), "nope.txt")


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_rooms")
    for split, seed in (("train", 11), ("test", 12)):
        generate_room(root / split / f"room_{seed}", seed=seed, width=48, height=36, num_train=3, num_test=1)
    return root


def test_scene_dataset_segmentation_ignores_void(rooms):
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "segmentation")
    assert dataset.class_names == tuple(CLASSES[1:]) and len(dataset.train) == 4 and len(dataset.test) == 4
    example = dataset.train[0]
    raw = cv2.imread(str(next((rooms / "train").glob("room_*/labels/*.png"))), cv2.IMREAD_UNCHANGED)
    assert example.target.dtype == np.int32 and example.image.shape[:2] == example.target.shape
    values = set(np.unique(example.target).tolist())
    assert values <= set(range(len(CLASSES) - 1)) | {IGNORE_INDEX}
    assert raw.shape == example.target.shape


def test_scene_dataset_depth_and_errors(rooms, tmp_path):
    dataset = files.scenes(str(rooms / "train"), str(rooms / "test"), "depth", max_depth=10.0)
    depth = dataset.test[2].target
    assert depth.dtype == np.float32 and 0 < depth[depth > 0].min() and depth.max() < 10
    with pytest.raises(DatasetError, match="neither a scene .* a folder of scenes"):
        files.scenes(str(tmp_path), str(rooms / "test"), "depth")
    with pytest.raises(DatasetError, match="data.train: no scenes named"):
        files.scenes("", str(rooms / "test"), "depth")


# ----------------------------------------------------------------------------------------------
# FiT3D's evaluation layouts (tests/eval_layouts.py writes them as the real data has them)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader, suffix, classes, num_classes", [
    (files.scannetpp_segmentation, ".JPG", [0, 7, 99], 100),
    (files.scannet_segmentation, ".jpg", [0, 5, 39], 40),
    (files.nyu_segmentation, ".png", [0, 6, 12], 13),
    (files.ade20k, ".jpg", [0, 77, 149], 150),
])
def test_segmentation_folders_reduce_zero_label(tmp_path, loader, suffix, classes, num_classes):
    truth = layouts.segmentation_folders(tmp_path, 21, suffix=suffix, classes=classes, size=(60, 80), train=2, test=2)
    dataset = loader(str(tmp_path))
    assert (len(dataset.train), len(dataset.test), dataset.num_classes) == (2, 2, num_classes)
    for i, want in enumerate(truth["validation"]):
        example = dataset.test[i]
        np.testing.assert_array_equal(example.target, want)  # stored 0 -> 255, k -> k - 1
        assert example.image.shape == (60, 80, 3) and example.image.dtype == np.uint8
    assert set(np.unique(dataset.train[0].target)) <= {*classes, IGNORE_INDEX}
    # A label past the classes (read without the reduction, say) names the file.
    bad = (tmp_path / "annotations" / "training" / "frame_00000.png")
    cv2.imwrite(str(bad), np.full((60, 80), num_classes + 1, np.uint8))
    with pytest.raises(DatasetError, match=rf"frame_00000.png: label values \[{num_classes}\] are outside"):
        dataset.train[0]
    bad.unlink()
    with pytest.raises(DatasetError, match="frame_00000.png: missing or unreadable label"):
        dataset.train[0]


def test_ade20k_accepts_the_release_folder_or_its_parent(tmp_path):
    layouts.segmentation_folders(tmp_path / "ADEChallengeData2016", 22, suffix=".jpg", classes=[1, 2], size=(30, 40), train=1, test=1)
    assert len(files.ade20k(str(tmp_path)).test) == len(files.ade20k(str(tmp_path / "ADEChallengeData2016")).test) == 1
    with pytest.raises(DatasetError, match=r"images/training: no such folder\. Expected .*\*\.jpg.*ADEChallengeData2016\.zip"):
        files.ade20k(str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetError, match=r"scannet_train\.txt: split file not found.*official site"):
        files.scannet_depth(str(tmp_path))
    with pytest.raises(DatasetError, match=r"images/training: no such folder.*prepare_scannetpp"):
        files.scannetpp_segmentation(str(tmp_path))


def test_voc_as_fit3d_names_it_and_without_reduction(tmp_path):
    truth = layouts.voc(tmp_path / "VOC2012", 23, size=(120, 150))
    dataset = load_dataset(ml_collections.ConfigDict({"name": "voc", "data_dir": str(tmp_path / "VOC2012")}), "segmentation")
    assert (len(dataset.train), len(dataset.test)) == (8, 2)
    np.testing.assert_array_equal(dataset.test[1].target, truth["val"][1])  # palette indices, 0 kept, 255 boundary
    assert 0 in truth["val"][1] and 255 in truth["val"][1]


def test_nyu_depth_split_files(tmp_path):
    """nyu_train.txt / nyu_test.txt: a leading '/', a 'None' line skipped, mm PNGs; NYUCrop
    (45:472, 43:608) on training frames only; the Eigen crop (45:471, 41:601) at evaluation."""
    truth = layouts.depth_splits(tmp_path, 24, names=("nyu_train.txt", "nyu_test.txt"), size=(480, 640), train=2, test=2)
    assert "None" in (tmp_path / "nyu_test.txt").read_text() and (tmp_path / "nyu_test.txt").read_text().startswith("/")
    dataset = files.nyu_depth(str(tmp_path))
    assert (len(dataset.train), len(dataset.test), dataset.max_depth) == (2, 2, 10.0)
    train = dataset.train[1]
    assert train.image.shape == (427, 565, 3)
    np.testing.assert_array_equal(train.target, truth["nyu_train.txt"][1][45:472, 43:608])
    test = dataset.test[0]
    np.testing.assert_array_equal(test.target, truth["nyu_test.txt"][0])
    assert test.target.dtype == np.float32 and test.target.max() < 4.0
    crop = dataset.eval_crop(480, 640)
    rows, cols = np.nonzero(crop)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (45, 471, 41, 601)
    # A frame of another size cannot take NYUCrop: named, not cropped to something else.
    rgb, depth = (tmp_path / f.lstrip("/") for f in (tmp_path / "nyu_train.txt").read_text().split()[:2])
    cv2.imwrite(str(rgb), np.zeros((240, 320, 3), np.uint8))
    cv2.imwrite(str(depth), np.ones((240, 320), np.uint16))
    with pytest.raises(DatasetError, match="320x240 is not 640x480"):
        dataset.train[0]


def test_scannet_and_scannetpp_depth_crops(tmp_path):
    layouts.depth_splits(tmp_path / "scannet", 25, names=("scannet_train.txt", "scannet_val.txt"), size=(480, 640), train=1, test=1)
    scannet = files.scannet_depth(str(tmp_path / "scannet"))
    assert scannet.train[0].target.shape == (480, 640)  # no training crop
    assert scannet.eval_crop(480, 640).sum() == (471 - 45) * (601 - 41) and scannet.max_depth == 10.0
    truth = layouts.depth_splits(tmp_path / "pp", 26, names=("scannetpp_train.txt", "scannetpp_val.txt"), size=(58, 87),
                                 rgb_suffix=".JPG", train=1, test=1)
    pp = files.scannetpp_depth(str(tmp_path / "pp"))
    assert pp.eval_crop is None and pp.max_depth == 20.0
    np.testing.assert_array_equal(pp.test[0].target, truth["scannetpp_val.txt"][0])
