"""Probe datasets by name: ``load_dataset(config.data)``; see each module for its layout."""

from __future__ import annotations

import ml_collections

from fit3d_jax.probe.datasets.files import (
    ade20k,
    kitti,
    nyu_depth,
    nyu_segmentation,
    scannet_depth,
    scannet_segmentation,
    scannetpp_depth,
    scannetpp_segmentation,
    scenes,
    voc,
)
from fit3d_jax.probe.datasets.tfds_sets import ade20k_tfds, nyu_depth_tfds
from fit3d_jax.probe.datasets.types import (
    DEPTH,
    SEGMENTATION,
    TASKS,
    Dataset,
    DatasetError,
    Example,
    Split,
    check_targets,
)

LOADERS = {  # FiT3D's evaluation layouts (files.py), tfds where it has the dataset, the built-in rooms
    "scannetpp": (scannetpp_segmentation, SEGMENTATION),
    "scannetpp_depth": (scannetpp_depth, DEPTH),
    "scannet": (scannet_segmentation, SEGMENTATION),
    "scannet_depth": (scannet_depth, DEPTH),
    "nyu": (nyu_segmentation, SEGMENTATION),
    "nyu_depth": (nyu_depth, DEPTH),
    "nyu_depth_tfds": (nyu_depth_tfds, DEPTH),
    "ade20k": (ade20k, SEGMENTATION),
    "ade20k_tfds": (ade20k_tfds, SEGMENTATION),
    "voc": (voc, SEGMENTATION),
    "kitti": (kitti, DEPTH),
    "scenes": (scenes, None),  # both tasks
}


def load_dataset(data: ml_collections.ConfigDict, task: str) -> Dataset:
    """``data.name`` picks the loader; the other fields of ``data`` are its arguments."""
    fields = data.to_dict()
    name = fields.pop("name")
    if name not in LOADERS:
        raise DatasetError(f"config.data.name={name!r} is not one of {sorted(LOADERS)}")
    loader, fixed_task = LOADERS[name]
    if fixed_task is not None and fixed_task != task:
        raise DatasetError(f"dataset {name!r} is for {fixed_task}, but config.task={task!r}")
    if fixed_task is None:
        fields["task"] = task
    try:
        return loader(**fields)
    except TypeError as e:
        raise DatasetError(f"config.data: {e}") from None


__all__ = ["DEPTH", "SEGMENTATION", "TASKS", "Dataset", "DatasetError", "Example", "Split", "check_targets", "load_dataset"]
