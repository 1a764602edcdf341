"""Evaluation datasets written in the layouts FiT3D's evaluation reads (``evaluation/configs``:
``eval_data/<dataset>``), with the real encodings:

- mmseg folders: ``images/{training,validation}/<name><suffix>`` and ``annotations/.../<name>.png``
  with 0 = unlabelled and k + 1 = class k (reduce_zero_label);
- VOC2012: ``JPEGImages``, palette-mode ``SegmentationClass`` PNGs (indices, 255 = boundary) and
  ``ImageSets/Segmentation/{train,val}.txt``;
- the depth toolbox's split files: ``<rgb> <depth> <focal>`` lines with a leading "/" (NYUv2's
  published files have one), a ``None`` line, uint16 depth PNGs at the dataset's scale (0 = none);
  KITTI's below ``input/`` and ``gt_depth/`` with sparse depth at scale 256.

The pictures are learnable: blocks whose colour codes the class and whose class sets the depth,
so that a short probe can beat the majority class and the best constant.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fit3d_jax.viz import palette


def blocks(rng: np.random.Generator, height: int, width: int, classes: list[int], block: int = 56, metres: float = 1.0):
    """image (H, W, 3) uint8 RGB, class ids (H, W) (values from ``classes``), depth (H, W): the
    class's rank, in units of 0.6 ``metres`` from ``metres``."""
    rows, cols = -(-height // block), -(-width // block)
    grid = rng.choice(classes, size=(rows, cols))
    ids = np.kron(grid, np.ones((block, block), np.int64))[:height, :width]
    colours = palette(max(classes) + 1).astype(np.int16)
    image = np.clip(colours[ids] + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8)
    rank = {c: i for i, c in enumerate(sorted(classes))}
    depth = metres * (1.0 + 0.6 * np.vectorize(rank.get)(ids) + rng.uniform(-0.05, 0.05, (height, width)))
    return image, ids, depth.astype(np.float32)


def _save_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"could not write {path}")


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), array)


def segmentation_folders(root: Path, seed: int, *, suffix: str, classes: list[int], size: tuple[int, int],
                         train: int = 8, test: int = 2) -> dict:
    """mmseg folders with reduce_zero_label labels; ``classes`` are class ids after the reduction.
    Returns {"validation": [labels after the reduction, ...]} with 255 where unlabelled."""
    rng = np.random.default_rng(seed)
    truth = {"training": [], "validation": []}
    for split, count in (("training", train), ("validation", test)):
        for k in range(count):
            image, ids, _ = blocks(rng, *size, classes)
            stored = (ids + 1).astype(np.uint8)
            stored[rng.random(size) < 0.05] = 0  # unlabelled pixels
            name = f"frame_{k:05d}"
            _save_rgb(root / "images" / split / f"{name}{suffix}", image)
            _save_png(root / "annotations" / split / f"{name}.png", stored)
            truth[split].append(np.where(stored == 0, 255, stored.astype(np.int32) - 1))
    return truth


def voc(root: Path, seed: int, *, size: tuple[int, int] = (300, 400), train: int = 8, test: int = 2) -> dict:
    """FiT3D's eval_data/VOC2012 (the tar's VOC2012 folder): palette PNGs of class indices."""
    rng = np.random.default_rng(seed)
    ids_by_split = {"train": [f"2007_{k:06d}" for k in range(train)], "val": [f"2008_{k:06d}" for k in range(test)]}
    truth = {}
    for split, names in ids_by_split.items():
        truth[split] = []
        for name in names:
            image, ids, _ = blocks(rng, *size, [0, 3, 8, 15])
            label = ids.astype(np.uint8)
            label[:, ::37] = 255  # object boundaries
            png = Image.fromarray(label, mode="P")
            png.putpalette(list(rng.integers(0, 256, 768, dtype=np.uint8)))  # colours are not the labels
            (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            png.save(root / "SegmentationClass" / f"{name}.png")
            _save_rgb(root / "JPEGImages" / f"{name}.jpg", image)
            truth[split].append(label.astype(np.int32))
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return truth


def depth_splits(root: Path, seed: int, *, names: tuple[str, str], size: tuple[int, int], scale: float = 1000.0,
                 rgb_suffix: str = ".jpg", metres: float = 1.0, train: int = 8, test: int = 2) -> dict:
    """Split files as the toolbox reads them (NYUv2's style of line). Returns {split file: [depth
    in metres as stored, ...]}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split_name, count in zip(names, (train, test), strict=True):
        lines, truth[split_name] = [], []
        for k in range(count):
            image, _, depth = blocks(rng, *size, [0, 1, 2, 3, 4], metres=metres)
            stored = np.round(depth * scale).astype(np.uint16)
            stored[rng.random(size) < 0.03] = 0  # holes
            scene = f"{split_name.split('.')[0]}_room_{k % 3}"
            rgb, png = f"{scene}/rgb_{k:05d}{rgb_suffix}", f"{scene}/sync_depth_{k:05d}.png"
            _save_rgb(root / rgb, image)
            _save_png(root / png, stored)
            lines.append(f"/{rgb} /{png} 518.8579")
            truth[split_name].append(stored.astype(np.float32) / scale)
        lines.insert(1, f"/{scene}/rgb_99999{rgb_suffix} None 518.8579")  # no ground truth: skipped
        (root / split_name).write_text("\n".join(lines) + "\n")
    return truth


def kitti(root: Path, seed: int, *, train: int = 8, test: int = 2) -> dict:
    """eval_data/kitti: 1242x375 frames below input/, sparse uint16 depth (x 256) below gt_depth/."""
    rng = np.random.default_rng(seed)
    truth = {}
    for split_name, count in (("kitti_eigen_train.txt", train), ("kitti_eigen_test.txt", test)):
        lines, truth[split_name] = [], []
        for k in range(count):
            image, _, depth = blocks(rng, 375, 1242, [0, 1, 2, 3, 4], metres=8.0)
            stored = np.round(depth * 256).astype(np.uint16)
            stored[rng.random(stored.shape) < 0.7] = 0  # LiDAR is sparse
            drive = f"2011_09_26_drive_{k % 2:04d}_sync"
            rgb = f"2011_09_26/{drive}/image_02/data/{split_name[12:-4]}{k:010d}.png"
            png = f"{drive}/proj_depth/groundtruth/image_02/{split_name[12:-4]}{k:010d}.png"
            _save_png(root / "input" / rgb, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            _save_png(root / "gt_depth" / png, stored)
            lines.append(f"{rgb} {png} 721.5377")
            truth[split_name].append(stored.astype(np.float32) / 256)
        lines.append(f"2011_09_26/2011_09_26_drive_0005_sync/image_02/data/{0:010d}.png None 721.5377")
        (root / split_name).write_text("\n".join(lines) + "\n")
    return truth
