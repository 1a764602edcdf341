"""ADE20K (``scene_parse150``) and NYUv2 depth (``nyu_depth_v2``) through tensorflow-datasets,
read without TensorFlow: ``tfds.data_source`` random access over array_record files.

Preparing a dataset needs TensorFlow once (the builders decode with it); reading does not:

    pip install tensorflow tensorflow-datasets
    tfds build scene_parse150 --file_format=array_record --data_dir=$DATA_DIR
    tfds build nyu_depth_v2 --file_format=array_record --data_dir=$DATA_DIR

A copy prepared earlier as TFRecord converts with
``tfds convert_format --root_data_dir=$DATA_DIR --out_file_format=array_record``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fit3d_jax.probe.datasets.classes import ADE20K_CLASSES
from fit3d_jax.probe.datasets.types import (
    DEPTH,
    EIGEN_CROP,
    SEGMENTATION,
    Dataset,
    DatasetError,
    Example,
    Split,
    nyu_train_crop,
)
from fit3d_jax.probe.metrics import IGNORE_INDEX


def open_split(name: str, split: str, data_dir: str):
    """``tfds.data_source`` that never downloads; a missing or TFRecord-only dataset raises
    DatasetError with the commands that prepare it."""
    import tensorflow_datasets as tfds  # imported here: only these datasets need it

    where = data_dir or "~/tensorflow_datasets"
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # tfds raises assorted types for "not there"
        builder = tfds.builder(name, data_dir=data_dir or None)
        if builder.is_prepared():
            raise DatasetError(
                f"tfds {name!r} split {split!r} in {builder.data_dir} cannot be read by random access ({e}). If it was "
                f"prepared as TFRecord, convert it: tfds convert_format --root_data_dir={where} --out_file_format=array_record"
            ) from None
        raise DatasetError(
            f"tfds dataset {name!r} is not prepared in {where} (config field data.data_dir). Prepare it once, with "
            f"TensorFlow installed: pip install tensorflow tensorflow-datasets && tfds build {name} "
            f"--file_format=array_record --data_dir={where}"
            + (" (ADE20K downloads from sceneparsing.csail.mit.edu; place the archives in the manual dir if offline)"
               if name == "scene_parse150" else "")
        ) from None


def _checked(record: dict, key: str, ndim: int, dtype, where: str) -> np.ndarray:
    value = np.asarray(record.get(key)) if key in record else None
    if value is None or value.ndim != ndim or value.dtype != dtype:
        got = "missing" if value is None else f"{value.dtype} {value.shape}"
        raise DatasetError(f"{where}: feature {key!r} must be {np.dtype(dtype).name} with {ndim} dims, got {got}")
    return value


def tfds_split(name: str, split: str, data_dir: str, convert: Callable[[dict, str], Example]) -> Split:
    """A Split over ``tfds.data_source(name, split)``; ``convert(record, where)`` makes the Example."""
    source = open_split(name, split, data_dir)
    where = f"{name}[{split}]"
    return Split(where, len(source), lambda i: convert(source[i], f"{where}[{i}]"))


def _ade20k_example(record: dict, where: str) -> Example:
    image = _checked(record, "image", 3, np.uint8, where)
    annotation = _checked(record, "annotation", 3, np.uint8, where)
    if annotation.shape[:2] != image.shape[:2]:
        raise DatasetError(f"{where}: annotation {annotation.shape[:2]} and image {image.shape[:2]} differ in size")
    raw = annotation[..., 0].astype(np.int32)
    return Example(where, image, np.where(raw == 0, IGNORE_INDEX, raw - 1).astype(np.int32))


def ade20k_tfds(data_dir: str = "", train_split: str = "train", test_split: str = "test") -> Dataset:
    """150 classes; the annotation's channel 0 holds 0 = "other" (ignored) or class id + 1
    (mmseg's ``reduce_zero_label``). tfds's ``test`` split is the ADE20K validation set."""
    split = lambda name: tfds_split("scene_parse150", name, data_dir, _ade20k_example)
    return Dataset("ade20k", SEGMENTATION, split(train_split), split(test_split), class_names=ADE20K_CLASSES)


def _nyu_example(record: dict, where: str, crop=None) -> Example:
    image = _checked(record, "image", 3, np.uint8, where)
    depth = _checked(record, "depth", 2, np.float16, where).astype(np.float32)
    if depth.shape != image.shape[:2]:
        raise DatasetError(f"{where}: depth {depth.shape} and image {image.shape[:2]} differ in size")
    depth = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    return Example(where, *((crop(image), crop(depth)) if crop else (image, depth)))


def nyu_depth_tfds(data_dir: str = "", train_split: str = "train", test_split: str = "validation",
                   min_depth: float = 1e-3, max_depth: float = 10.0) -> Dataset:
    """480x640 images with depth in metres (float16 in the files); training frames take the
    toolbox's NYUCrop and the metrics the Eigen crop (rows 45:471, columns 41:601), as FiT3D's
    NYUv2 evaluation does."""
    train = tfds_split("nyu_depth_v2", train_split, data_dir, lambda r, w: _nyu_example(r, w, nyu_train_crop))
    test = tfds_split("nyu_depth_v2", test_split, data_dir, _nyu_example)
    return Dataset("nyu_depth_v2", DEPTH, train, test, min_depth=min_depth, max_depth=max_depth, eval_crop=EIGEN_CROP)
