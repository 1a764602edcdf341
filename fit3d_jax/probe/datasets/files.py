"""Datasets read from their standard folder layouts.

Pascal VOC 2012 segmentation (tfds's ``voc`` has boxes only, no masks)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png          palette PNG, 255 = boundary (ignored)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    optional, the usual augmented set: SegmentationClassAug/<id>.png + ImageSets/Segmentation/trainaug.txt

KITTI depth (the BTS / DINOv2 split files; one line per frame ``<image> <depth> [focal]``, paths
relative to ``data_dir``; depth PNGs are uint16 with metres x 256, 0 = no LiDAR point; frames
whose depth is ``None`` are skipped by those split files and here too).

Scenes (ScanNet++ in the lifting issue's layout, and the built-in synthetic rooms): every view of
every scene in the listed folders, with the frames' ``label_path`` (class ids named by
``classes.json``) or ``depth_path``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fit3d_jax.images import ImageError, load_image
from fit3d_jax.probe.datasets.types import (
    DEPTH,
    SEGMENTATION,
    Dataset,
    DatasetError,
    Example,
    Split,
    fraction_crop,
)
from fit3d_jax.probe.metrics import IGNORE_INDEX
from fit3d_jax.scenes import (
    SceneError,
    find_scenes,
    load_scene,
    read_depth,
    read_image,
    read_labels,
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
KITTI_KB_CROP = (352, 1216)  # bottom-centre crop the KITTI benchmark (and DINOv2) evaluate on
GARG_CROP = fraction_crop(0.40810811, 0.99189189, 0.03594771, 0.96405229)


def _image(path: Path, where: str) -> np.ndarray:
    try:
        return load_image(path)
    except ImageError:
        raise DatasetError(f"{path}: missing or unreadable image ({where})") from None


def _lines(path: Path, how_to: str) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found. {how_to}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{path}: split file lists no examples")
    return lines


def voc(data_dir: str, train_split: str = "train", test_split: str = "val") -> Dataset:
    """``data_dir``: the folder holding VOCdevkit (or VOCdevkit itself, or VOC2012). ``trainaug``
    as the training split reads SegmentationClassAug."""
    from PIL import Image  # palette PNGs: OpenCV would convert indices to colours

    root = Path(data_dir)
    candidates = [root / "VOCdevkit" / "VOC2012", root / "VOC2012", root]
    base = next((c for c in candidates if (c / "JPEGImages").is_dir()), None)
    how_to = ("Download VOCtrainval_11-May-2012.tar from the Pascal VOC site and extract it so that "
              f"{root}/VOCdevkit/VOC2012/JPEGImages exists (config field data.data_dir).")
    if base is None:
        raise DatasetError(f"{root}: no VOCdevkit/VOC2012/JPEGImages. {how_to}")

    def split(name: str) -> Split:
        ids = _lines(base / "ImageSets" / "Segmentation" / f"{name}.txt", how_to)
        masks = base / ("SegmentationClassAug" if name == "trainaug" else "SegmentationClass")

        def read(i: int) -> Example:
            image = _image(base / "JPEGImages" / f"{ids[i]}.jpg", f"VOC {name} {ids[i]}")
            path = masks / f"{ids[i]}.png"
            try:
                label = np.asarray(Image.open(path)).astype(np.int32)
            except (OSError, ValueError):
                raise DatasetError(f"{path}: missing or unreadable label of VOC {name} {ids[i]}") from None
            if label.shape != image.shape[:2]:
                raise DatasetError(f"{path}: label {label.shape} does not match its image {image.shape[:2]}")
            if (bad := np.setdiff1d(np.unique(label), [*range(len(VOC_CLASSES)), IGNORE_INDEX])).size:
                raise DatasetError(f"{path}: label values {bad.tolist()} are not VOC class ids (is it a colour PNG?)")
            return Example(f"voc/{ids[i]}", image, label)

        return Split(f"voc[{name}]", len(ids), read)

    return Dataset("voc2012", SEGMENTATION, split(train_split), split(test_split), class_names=VOC_CLASSES)


def kb_crop(array: np.ndarray) -> np.ndarray:
    """The KITTI benchmark crop: the bottom 352 rows, the centre 1216 columns."""
    height, width = array.shape[:2]
    if height < KITTI_KB_CROP[0] or width < KITTI_KB_CROP[1]:
        raise DatasetError(f"KITTI frame {width}x{height} is smaller than the 1216x352 benchmark crop")
    top, left = height - KITTI_KB_CROP[0], (width - KITTI_KB_CROP[1]) // 2
    return array[top:, left : left + KITTI_KB_CROP[1]]


def kitti(data_dir: str, train_split: str, test_split: str, image_root: str = "", depth_root: str = "",
          min_depth: float = 1e-3, max_depth: float = 80.0) -> Dataset:
    """Frames are KB-cropped to 352x1216; the metrics use the Garg crop (as DINOv2)."""
    root = Path(data_dir)
    how_to = ("Give the split files of the Eigen split as BTS/DINOv2 use them (config fields data.train_split / "
              "data.test_split), with paths relative to data.data_dir, data.image_root or data.depth_root.")

    def split(name: str) -> Split:
        path = Path(name) if Path(name).is_absolute() else root / name
        rows = []
        for number, line in enumerate(_lines(path, how_to), 1):
            fields = line.split()
            if len(fields) < 2:
                raise DatasetError(f"{path}:{number}: expected '<image> <depth> [focal]', got {line!r}")
            if fields[1] != "None":
                rows.append((root / image_root / fields[0], root / depth_root / fields[1]))

        def read(i: int) -> Example:
            image_path, depth_path = rows[i]
            image = _image(image_path, f"KITTI {path.name}")
            raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
            if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
                raise DatasetError(f"{depth_path}: missing, unreadable or not a one-channel uint16 depth PNG")
            if raw.shape != image.shape[:2]:
                raise DatasetError(f"{depth_path}: depth {raw.shape} does not match its image {image.shape[:2]}")
            return Example(str(image_path), kb_crop(image), kb_crop(raw).astype(np.float32) / 256.0)

        return Split(f"kitti[{path.name}]", len(rows), read)

    return Dataset("kitti", DEPTH, split(train_split), split(test_split), min_depth=min_depth, max_depth=max_depth,
                   eval_crop=GARG_CROP)


def scenes(train: str, test: str, task: str, min_depth: float = 1e-3, max_depth: float = 20.0,
           ignore_ids: tuple[int, ...] = (0,)) -> Dataset:
    """Every view (training and held-out) of every scene. Segmentation: class ids from the label
    PNGs, the ids in ``ignore_ids`` (the synthetic rooms' and ScanNet++'s void / unlabelled 0)
    are ignored and the rest renumbered in order; the classes come from classes.json, which must
    agree across scenes."""
    def views(spec: str, field: str):
        try:
            loaded = [load_scene(folder) for folder in find_scenes(spec)]
        except SceneError as e:
            raise DatasetError(f"config.{field}: {e}") from None
        return loaded, [v for s in loaded for v in (*s.train, *s.test)]

    train_scenes, train_views = views(train, "data.train")
    test_scenes, test_views = views(test, "data.test")
    class_names, lookup = None, None
    if task == SEGMENTATION:
        names = {s.classes for s in train_scenes + test_scenes}
        if None in names:
            missing = next(s.root for s in train_scenes + test_scenes if s.classes is None)
            raise DatasetError(f"{missing}: segmentation needs classes.json and per-frame label_path")
        if len(names) != 1:
            raise DatasetError(f"the scenes' classes.json files differ: {sorted(names)}")
        all_names = names.pop()
        kept = [i for i in range(len(all_names)) if i not in ignore_ids]
        class_names = tuple(all_names[i] for i in kept)
        lookup = np.full(max(256, len(all_names)), IGNORE_INDEX, np.int32)
        lookup[kept] = np.arange(len(kept))

    def split(name: str, views_) -> Split:
        for v in views_:
            if (v.label_path if task == SEGMENTATION else v.depth_path) is None:
                raise DatasetError(f"{v.image_path.parent.parent}: view {v.name!r} has no "
                                   f"{'label_path' if task == SEGMENTATION else 'depth_path'} for {task}")

        def read(i: int) -> Example:
            view = views_[i]
            try:
                image = read_image(view)
                target = lookup[read_labels(view)] if task == SEGMENTATION else read_depth(view)
            except (SceneError, IndexError) as e:
                raise DatasetError(f"{view.image_path}: {e}") from None
            return Example(f"{view.image_path.parent.parent.name}/{view.name}", image, target)

        return Split(name, len(views_), read)

    return Dataset("scenes", task, split("scenes[train]", train_views), split("scenes[test]", test_views),
                   class_names=class_names, min_depth=min_depth, max_depth=max_depth)
