"""Datasets read from the folder layouts FiT3D's evaluation configs read (``evaluation/configs``:
``data_root = eval_data/<dataset>``), which are the layouts of mmsegmentation's datasets and of the
depth toolbox.

Pascal VOC 2012 segmentation (tfds's ``voc`` has boxes only, no masks)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png          palette PNG, 255 = boundary (ignored)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    optional, the usual augmented set: SegmentationClassAug/<id>.png + ImageSets/Segmentation/trainaug.txt

Segmentation folders as mmsegmentation's CustomDataset reads them (FiT3D's ScanNet++ ``.JPG``,
ScanNet ``.jpg``, NYUv2 ``.png`` and ADE20K's ``ADEChallengeData2016`` ``.jpg``)::

    <data_dir>/images/{training,validation}/<name><img_suffix>
    <data_dir>/annotations/{training,validation}/<name>.png      class ids; with reduce_zero_label
                                                                0 = unlabelled (ignored), k = class k - 1

Depth split files as FiT3D's depth toolbox and BTS read them: one line per frame
``<image> <depth> [focal]``, paths relative to ``data_dir`` (a leading "/" is dropped), lines whose
depth is ``None`` skipped; depth PNGs are uint16, metres x ``depth_scale`` (ScanNet++, ScanNet, NYUv2:
1000; KITTI: 256), 0 = no measurement. Files: ``nyu_{train,test}.txt``, ``scannet_{train,val}.txt``,
``scannetpp_{train,val}.txt``, ``kitti_eigen_{train,test}.txt`` (KITTI's paths below ``input/`` and
``gt_depth/``). NYUv2 training frames are cropped to rows 45:472, columns 43:608 (the toolbox's
NYUCrop); KITTI frames are KB-cropped to 352x1216, as the toolbox crops the image in training and
testing and the ground truth in training and evaluation.

Scenes (the built-in synthetic rooms): every view of every scene in the listed folders, with the
frames' ``label_path`` (class ids named by ``classes.json``) or ``depth_path``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fit3d_jax.images import ImageError, load_image
from fit3d_jax.probe.datasets.classes import ADE20K_CLASSES, NYU_CLASSES, SCANNET_CLASSES, VOC_CLASSES
from fit3d_jax.probe.datasets.types import (
    DEPTH,
    EIGEN_CROP,
    GARG_CROP,
    SEGMENTATION,
    Dataset,
    DatasetError,
    Example,
    Split,
    nyu_train_crop,
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
from fit3d_jax.scenes.scannetpp import TOP100

# How to obtain the datasets FiT3D evaluates on (its README, "Evaluation": eval_data/<name>).
OBTAIN = {
    "scannetpp": ("write it with configs/prepare_scannetpp.py (probe_data=True), or download FiT3D's processed ScanNet++ "
                  "evaluation data (link in ywyue/FiT3D's README)"),
    "official": ("download it from the dataset's official site and arrange it as FiT3D's README shows for eval_data/ "
                 "(ywyue/FiT3D, Evaluation)"),
    "ade20k": "download ADEChallengeData2016.zip (MIT Scene Parsing benchmark) and unzip it",
}
KITTI_KB_CROP = (352, 1216)  # bottom-centre crop the KITTI benchmark (and DINOv2) evaluate on


def _image(path: Path, where: str) -> np.ndarray:
    try:
        return load_image(path)
    except ImageError:
        raise DatasetError(f"{path}: missing or unreadable image ({where})") from None


def _label_png(path: Path, of: str) -> np.ndarray:
    """Class ids as the PNG stores them (palette indices, not colours: Pillow, as mmseg reads them)."""
    from PIL import Image

    try:
        label = np.asarray(Image.open(path)).astype(np.int32)
    except (OSError, ValueError):
        raise DatasetError(f"{path}: missing or unreadable label of {of}") from None
    if label.ndim != 2:
        raise DatasetError(f"{path}: label of {of} has shape {label.shape}, not one channel of class ids (a colour PNG?)")
    return label


def _matches(path: Path, target: np.ndarray, image: np.ndarray, what: str) -> np.ndarray:
    if target.shape != image.shape[:2]:
        raise DatasetError(f"{path}: {what} {target.shape} does not match its image {image.shape[:2]}")
    return target


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

        def target(i: int) -> np.ndarray:
            path = masks / f"{ids[i]}.png"
            label = _label_png(path, f"VOC {name} {ids[i]}")
            if (bad := np.setdiff1d(np.unique(label), [*range(len(VOC_CLASSES)), IGNORE_INDEX])).size:
                raise DatasetError(f"{path}: label values {bad.tolist()} are not VOC class ids (is it a colour PNG?)")
            return label

        def read(i: int) -> Example:
            image = _image(base / "JPEGImages" / f"{ids[i]}.jpg", f"VOC {name} {ids[i]}")
            return Example(f"voc/{ids[i]}", image, _matches(masks / f"{ids[i]}.png", target(i), image, "label"))

        return Split(f"voc[{name}]", len(ids), read, target)

    return Dataset("voc2012", SEGMENTATION, split(train_split), split(test_split), class_names=VOC_CLASSES)


def kb_crop(array: np.ndarray) -> np.ndarray:
    """The KITTI benchmark crop: the bottom 352 rows, the centre 1216 columns."""
    height, width = array.shape[:2]
    if height < KITTI_KB_CROP[0] or width < KITTI_KB_CROP[1]:
        raise DatasetError(f"KITTI frame {width}x{height} is smaller than the 1216x352 benchmark crop")
    top, left = height - KITTI_KB_CROP[0], (width - KITTI_KB_CROP[1]) // 2
    return array[top:, left : left + KITTI_KB_CROP[1]]


def _depth_png(path: Path, scale: float) -> np.ndarray:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f"{path}: missing, unreadable or not a one-channel uint16 depth PNG")
    return raw.astype(np.float32) / scale


def depth_splits(data_dir: str, train_split: str, test_split: str, *, depth_scale: float, min_depth: float,
                 max_depth: float, image_root: str = "", depth_root: str = "", crop=None, train_crop=None, eval_crop=None,
                 name: str = "depth", obtain: str = OBTAIN["official"]) -> Dataset:
    """Depth frames listed in split files (see the module docstring); ``crop`` applies to image and
    depth as they are read (KITTI's KB crop), ``train_crop`` to the training split's only (NYUCrop)."""
    root = Path(data_dir)
    how_to = (f"Give the split files (config fields data.train_split / data.test_split), with lines '<image> <depth>' "
              f"relative to data.data_dir={str(root)!r}; to get the data, {obtain}.")
    if not root.is_dir():
        raise DatasetError(f"config.data.data_dir={str(root)!r}: no such folder. {how_to}")

    def split(split_name: str, crops) -> Split:
        path = Path(split_name) if Path(split_name).is_absolute() else root / split_name
        rows = []
        for number, line in enumerate(_lines(path, how_to), 1):
            fields = line.split()
            if len(fields) < 2:
                raise DatasetError(f"{path}:{number}: expected '<image> <depth> [focal]', got {line!r}")
            if fields[1] != "None":
                rows.append((root / image_root / fields[0].lstrip("/"), root / depth_root / fields[1].lstrip("/")))

        def target(i: int) -> np.ndarray:
            depth = _depth_png(rows[i][1], depth_scale)
            for c in crops:
                depth = c(depth)
            return depth

        def read(i: int) -> Example:
            image_path, depth_path = rows[i]
            image = _image(image_path, f"{name} {path.name}")
            depth = _matches(depth_path, _depth_png(depth_path, depth_scale), image, "depth")
            for c in crops:
                image, depth = c(image), c(depth)
            return Example(str(image_path), image, depth)

        return Split(f"{name}[{path.name}]", len(rows), read, target)

    crops = [c for c in (crop,) if c is not None]
    return Dataset(name, DEPTH, split(train_split, crops + ([train_crop] if train_crop else [])), split(test_split, crops),
                   min_depth=min_depth, max_depth=max_depth, eval_crop=eval_crop)


def kitti(data_dir: str, train_split: str = "kitti_eigen_train.txt", test_split: str = "kitti_eigen_test.txt",
          image_root: str = "input", depth_root: str = "gt_depth", min_depth: float = 1e-3, max_depth: float = 80.0) -> Dataset:
    """The BTS Eigen split; frames are KB-cropped to 352x1216 and the metrics use the Garg crop of
    the cropped frame (the toolbox's eval_kb_crop, then eval_mask)."""
    return depth_splits(data_dir, train_split, test_split, depth_scale=256.0, min_depth=min_depth, max_depth=max_depth,
                        image_root=image_root, depth_root=depth_root, crop=kb_crop, eval_crop=GARG_CROP, name="kitti")


def nyu_depth(data_dir: str, train_split: str = "nyu_train.txt", test_split: str = "nyu_test.txt",
              min_depth: float = 1e-3, max_depth: float = 10.0) -> Dataset:
    """FiT3D's NYUv2 depth (``eval_data/nyu``): 640x480 frames, millimetre PNGs, NYUCrop in training,
    the Eigen crop at evaluation."""
    return depth_splits(data_dir, train_split, test_split, depth_scale=1000.0, min_depth=min_depth, max_depth=max_depth,
                        train_crop=nyu_train_crop, eval_crop=EIGEN_CROP, name="nyu")


def scannet_depth(data_dir: str, train_split: str = "scannet_train.txt", test_split: str = "scannet_val.txt",
                  min_depth: float = 1e-3, max_depth: float = 10.0) -> Dataset:
    """FiT3D's ScanNet depth (``eval_data/scannet``): millimetre PNGs, no training crop, the Eigen
    crop at evaluation (640x480 frames)."""
    return depth_splits(data_dir, train_split, test_split, depth_scale=1000.0, min_depth=min_depth, max_depth=max_depth,
                        eval_crop=EIGEN_CROP, name="scannet")


def scannetpp_depth(data_dir: str, train_split: str = "scannetpp_train.txt", test_split: str = "scannetpp_val.txt",
                    min_depth: float = 1e-3, max_depth: float = 20.0) -> Dataset:
    """FiT3D's ScanNet++ depth: millimetre PNGs, 0.001-20 m, no crop (prepare_scannetpp writes them)."""
    return depth_splits(data_dir, train_split, test_split, depth_scale=1000.0, min_depth=min_depth, max_depth=max_depth,
                        name="scannetpp", obtain=OBTAIN["scannetpp"])


def segmentation_folders(data_dir: str, *, classes: tuple[str, ...], img_suffix: str, seg_suffix: str = ".png",
                         reduce_zero_label: bool = True, train_dirs=("images/training", "annotations/training"),
                         test_dirs=("images/validation", "annotations/validation"), name: str = "segmentation",
                         obtain: str = OBTAIN["official"]) -> Dataset:
    """mmseg's CustomDataset layout: every ``<img_suffix>`` file below the image folder (sorted), its
    label the same name with ``seg_suffix`` below the annotation folder."""
    root = Path(data_dir)
    how_to = (f"Expected {root}/{train_dirs[0]}/*{img_suffix} with labels in {root}/{train_dirs[1]}/*{seg_suffix} (and "
              f"{test_dirs[0]}, {test_dirs[1]}), as FiT3D's evaluation reads them (config field data.data_dir); to get the "
              f"data, {obtain}.")

    def split(images: str, annotations: str) -> Split:
        folder = root / images
        if not folder.is_dir():
            raise DatasetError(f"{folder}: no such folder. {how_to}")
        files = sorted(p for p in folder.rglob(f"*{img_suffix}") if p.is_file())
        if not files:
            raise DatasetError(f"{folder}: no *{img_suffix} images. {how_to}")

        def label_path(i: int) -> Path:
            return root / annotations / files[i].relative_to(folder).with_suffix(seg_suffix)

        def target(i: int) -> np.ndarray:
            label = _label_png(label_path(i), str(files[i]))
            if reduce_zero_label:  # mmseg: 0 -> ignore, k -> k - 1
                label = np.where(label == 0, IGNORE_INDEX, label - 1)
            if (bad := np.setdiff1d(np.unique(label), [*range(len(classes)), IGNORE_INDEX])).size:
                raise DatasetError(f"{label_path(i)}: label values {bad.tolist()} are outside the {len(classes)} classes"
                                   + (" (after reduce_zero_label)" if reduce_zero_label else ""))
            return label

        def read(i: int) -> Example:
            image = _image(files[i], name)
            return Example(f"{name}/{files[i].stem}", image, _matches(label_path(i), target(i), image, "label"))

        return Split(f"{name}[{images}]", len(files), read, target)

    return Dataset(name, SEGMENTATION, split(*train_dirs), split(*test_dirs), class_names=tuple(classes))


def scannetpp_segmentation(data_dir: str) -> Dataset:
    """FiT3D's ScanNet++ segmentation: 100 classes (top100.txt), .JPG images, reduce_zero_label."""
    return segmentation_folders(data_dir, classes=TOP100, img_suffix=".JPG", name="scannetpp", obtain=OBTAIN["scannetpp"])


def scannet_segmentation(data_dir: str) -> Dataset:
    """FiT3D's ScanNet segmentation (``eval_data/scannet``): the 40 NYU40 classes, .jpg images,
    reduce_zero_label."""
    return segmentation_folders(data_dir, classes=SCANNET_CLASSES, img_suffix=".jpg", name="scannet")


def nyu_segmentation(data_dir: str) -> Dataset:
    """FiT3D's NYUv2 segmentation (``eval_data/nyuv2``): 13 classes, .png images, reduce_zero_label."""
    return segmentation_folders(data_dir, classes=NYU_CLASSES, img_suffix=".png", name="nyuv2")


def ade20k(data_dir: str) -> Dataset:
    """ADE20K as released (``ADEChallengeData2016``, the folder or its parent): 150 classes, .jpg
    images, reduce_zero_label."""
    root = Path(data_dir)
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    return segmentation_folders(str(root), classes=ADE20K_CLASSES, img_suffix=".jpg", name="ade20k", obtain=OBTAIN["ade20k"])


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
        lookup = np.full(len(all_names), IGNORE_INDEX, np.int32)
        lookup[kept] = np.arange(len(kept))

    def split(name: str, views_) -> Split:
        for v in views_:
            if (v.label_path if task == SEGMENTATION else v.depth_path) is None:
                raise DatasetError(f"{v.image_path.parent.parent}: view {v.name!r} has no "
                                   f"{'label_path' if task == SEGMENTATION else 'depth_path'} for {task}")

        def target(i: int) -> np.ndarray:
            view = views_[i]
            try:
                if task != SEGMENTATION:
                    return read_depth(view)
                labels = read_labels(view)
            except SceneError as e:
                raise DatasetError(f"{view.image_path}: {e}") from None
            if labels.max(initial=0) >= len(lookup):
                bad = np.unique(labels[labels >= len(lookup)])
                raise DatasetError(f"{view.label_path}: label values {bad[:10].tolist()} are beyond the {len(lookup)} classes of "
                                   "classes.json (every label value needs its class named there)")
            return lookup[labels]

        def read(i: int) -> Example:
            view = views_[i]
            try:
                image = read_image(view)
            except SceneError as e:
                raise DatasetError(f"{view.image_path}: {e}") from None
            return Example(f"{view.image_path.parent.parent.name}/{view.name}", image, target(i))

        return Split(name, len(views_), read, target)

    return Dataset("scenes", task, split("scenes[train]", train_views), split("scenes[test]", test_views),
                   class_names=class_names, min_depth=min_depth, max_depth=max_depth)
