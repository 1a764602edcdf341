"""What every probe dataset is read into: random-access splits of examples, and the facts the
probe needs about the dataset (task, classes, depth range, evaluation crop)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

SEGMENTATION, DEPTH = "segmentation", "depth"
TASKS = (SEGMENTATION, DEPTH)


class DatasetError(ValueError):
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
    worker threads)."""

    def __init__(self, name: str, length: int, read: Callable[[int], Example]):
        self.name, self._length, self._read = name, length, read

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
