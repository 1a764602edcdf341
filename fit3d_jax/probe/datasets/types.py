"""What every probe dataset is read into: random-access splits of examples, and the facts the
probe needs about the dataset (task, classes, depth range, evaluation crop)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from fit3d_jax.errors import FitError
from fit3d_jax.probe.metrics import IGNORE_INDEX

SEGMENTATION, DEPTH = "segmentation", "depth"
TASKS = (SEGMENTATION, DEPTH)


class DatasetError(FitError, ValueError):
    """A dataset is missing or malformed; the message names the file or folder and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Example:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    # segmentation: (H, W) int32 class ids, IGNORE_INDEX where unlabelled;
    # depth: (H, W) float32 metres, 0 where there is no measurement.
    target: np.ndarray


class Split(Sequence):
    """``len(split)`` examples, read on demand by ``read(i)`` (thread-safe: loaders call it from
    worker threads). ``target(i)``, where a loader has it, reads example i's target alone (labels
    or depth, checked as ``read`` checks them): what ``check_targets`` scans before training."""

    def __init__(self, name: str, length: int, read: Callable[[int], Example], target: Callable[[int], np.ndarray] | None = None):
        self.name, self._length, self._read, self._target = name, length, read, target

    def target(self, i: int) -> np.ndarray:
        return self._target(i) if self._target is not None else self[i].target

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: int) -> Example:
        if not 0 <= i < self._length:
            raise IndexError(f"{self.name}: example {i} of {self._length}")
        return self._read(i)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    train: Split
    test: Split
    class_names: tuple[str, ...] | None = None  # segmentation
    min_depth: float = 1e-3  # depth: the bins' range and the evaluation's valid range
    max_depth: float = 10.0
    # depth: (H, W) -> bool mask of the pixels the metrics count (Eigen / Garg crops); None = all.
    eval_crop: Callable[[int, int], np.ndarray] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names or ())


def fraction_crop(top: float, bottom: float, left: float, right: float) -> Callable[[int, int], np.ndarray]:
    """An evaluation crop given as fractions of the image (the Garg crop's form)."""

    def mask(height: int, width: int) -> np.ndarray:
        m = np.zeros((height, width), bool)
        m[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
        return m

    return mask


def box_crop(top: int, bottom: int, left: int, right: int, size: tuple[int, int]) -> Callable[[int, int], np.ndarray]:
    """An evaluation crop in pixels, valid only for images of ``size`` (the Eigen crop's form)."""

    def mask(height: int, width: int) -> np.ndarray:
        if (height, width) != size:
            raise DatasetError(f"the evaluation crop is defined for {size[0]}x{size[1]} images, got {height}x{width}")
        m = np.zeros((height, width), bool)
        m[top:bottom, left:right] = True
        return m

    return mask


# The depth toolbox's evaluation masks: Garg's (KITTI, of the KB-cropped frame) and Eigen's (NYUv2 and
# ScanNet, for 640x480 frames).
GARG_CROP = fraction_crop(0.40810811, 0.99189189, 0.03594771, 0.96405229)
EIGEN_CROP = box_crop(45, 471, 41, 601, (480, 640))
NYU_TRAIN_CROP = (slice(45, 472), slice(43, 608))  # the toolbox's NYUCrop, training frames only


def nyu_train_crop(array: np.ndarray) -> np.ndarray:
    if array.shape[:2] != (480, 640):
        raise DatasetError(f"NYUv2 training frame {array.shape[1]}x{array.shape[0]} is not 640x480 (NYUCrop is 45:472, 43:608)")
    return array[NYU_TRAIN_CROP]


def check_targets(dataset: Dataset, workers: int = 8) -> int:
    """Reads every target of both splits (in threads) before any training: labels outside the
    classes and depth maps without a valid pixel raise DatasetError naming the example, instead of
    surfacing mid-run or as NaN metrics. Returns how many were read."""
    import concurrent.futures

    def check(split: Split, i: int) -> None:
        target = split.target(i)
        if dataset.task == SEGMENTATION:
            valid = (target >= 0) & (target < dataset.num_classes)
            bad = np.unique(target[~valid & (target != IGNORE_INDEX)])
            if bad.size:
                raise DatasetError(f"{split.name} example {i}: label values {bad[:10].tolist()} are outside the "
                                   f"{dataset.num_classes} classes (class ids 0..{dataset.num_classes - 1}, {IGNORE_INDEX} = ignored)")
        elif not ((target > dataset.min_depth) & (target <= dataset.max_depth)).any():
            raise DatasetError(f"{split.name} example {i}: no pixel has a depth in ({dataset.min_depth:g}, {dataset.max_depth:g}] m "
                               "(an empty or mis-scaled depth file): its loss and metrics would be empty")

    jobs = [(split, i) for split in (dataset.train, dataset.test) for i in range(len(split))]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:  # PNG decoding releases the GIL
        for future in [pool.submit(check, *job) for job in jobs]:
            future.result()
    return len(jobs)
