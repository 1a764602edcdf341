"""The ScanNet++ release as its download script and toolkit (scannetpp/scannetpp) leave it on disk.

::

    <root>/splits/<split>.txt                       one scene id per line (nvs_sem_train: 230, nvs_sem_val: 50)
    <root>/metadata/semantic_benchmark/top100.txt   the semantic classes, one per line
    <root>/data/<id>/dslr/
        resized_images/*.JPG, resized_anon_masks/*.png   fisheye (OPENCV_FISHEYE), 1752x1168
        colmap/{cameras,images,points3D}.txt             COLMAP text model (world-to-camera, OpenCV axes)
        nerfstudio/transforms.json                       the same cameras as nerfstudio frames
        train_test_lists.json                            {"train": [...], "test": [...]} image names
        and after undistortion, from the toolkit (dslr/undistort.py; newer releases ship them):
        resized_undistorted_images/, resized_undistorted_masks/, nerfstudio/transforms_undistorted.json
        or as FiT3D's preprocessing names them: undistorted_images/, undistorted_anon_masks/
    <root>/data/<id>/scans/mesh_aligned_0.05.ply, segments.json, segments_anno.json

A ``dslr/`` folder (or its scene folder ``data/<id>``) is a scene here when it has been undistorted;
the raw fisheye one is refused with the command that prepares it.

FiT3D's data root (``db/scannetpp`` in its code; what ``prepare_scannetpp`` writes)::

    <root>/metadata/<split>.txt     the release's split files, moved there by reorganize_data.py
    <root>/scenes/<id>/             FiT3D scene folders (``scenes.nerfstudio``)
"""

from __future__ import annotations

from pathlib import Path

from fit3d_jax.scenes import nerfstudio, validation
from fit3d_jax.scenes.types import SceneData, SceneError

SPLITS_DIR, DATA_DIR = "splits", "data"
CLASSES_FILE = Path("metadata") / "semantic_benchmark" / "top100.txt"
TRAIN_TEST_LISTS = "train_test_lists.json"
MESH, SEGMENTS, ANNOTATIONS = Path("scans") / "mesh_aligned_0.05.ply", Path("scans") / "segments.json", Path("scans") / "segments_anno.json"
RAW_JSON, UNDISTORTED_JSON = Path("nerfstudio") / "transforms.json", Path("nerfstudio") / "transforms_undistorted.json"
RAW_DIRS = ("resized_images", "resized_anon_masks")
# (images, masks) of an undistorted dslr/ folder: FiT3D's preprocessing, then the toolkit's release.
UNDISTORTED_DIRS = (("undistorted_images", "undistorted_anon_masks"), ("resized_undistorted_images", "resized_undistorted_masks"))
# metadata/semantic_benchmark/top100.txt, in its order: the classes FiT3D's ScanNet++ probes use
# (mmsegmentation/mmseg/datasets/scannetpp.py, CLASSES; label k + 1 in its annotations, 0 = none).
TOP100 = (
    "wall", "ceiling", "floor", "table", "door", "ceiling lamp", "cabinet", "blinds", "curtain", "chair", "storage cabinet",
    "office chair", "bookshelf", "whiteboard", "window", "box", "window frame", "monitor", "shelf", "doorframe", "pipe",
    "heater", "kitchen cabinet", "sofa", "windowsill", "bed", "shower wall", "trash can", "book", "plant", "blanket", "tv",
    "computer tower", "kitchen counter", "refrigerator", "jacket", "electrical duct", "sink", "bag", "picture", "pillow",
    "towel", "suitcase", "backpack", "crate", "keyboard", "rack", "toilet", "paper", "printer", "poster", "painting",
    "microwave", "board", "shoes", "socket", "bottle", "bucket", "cushion", "basket", "shoe rack", "telephone", "file folder",
    "cloth", "blind rail", "laptop", "plant pot", "exhaust fan", "cup", "coat hanger", "light switch", "speaker",
    "table lamp", "air vent", "clothes hanger", "kettle", "smoke detector", "container", "power strip", "slippers",
    "paper bag", "mouse", "cutting board", "toilet paper", "paper towel", "pot", "clock", "pan", "tap", "jar",
    "soap dispenser", "binder", "bowl", "tissue box", "whiteboard eraser", "toilet brush", "spray bottle", "headphones",
    "stapler", "marker",
)


FIT3D_SCENES, FIT3D_METADATA = "scenes", "metadata"


def is_root(path: Path) -> bool:
    """A ScanNet++ release root (``data/`` and ``splits/``)."""
    return (path / DATA_DIR).is_dir() and (path / SPLITS_DIR).is_dir()


def is_fit3d_root(path: Path) -> bool:
    """FiT3D's data root (``scenes/`` and ``metadata/``)."""
    return (path / FIT3D_SCENES).is_dir() and (path / FIT3D_METADATA).is_dir()


def dslr_folder(path: Path) -> Path | None:
    """The ``dslr/`` folder ``path`` is or holds, if it has the toolkit's nerfstudio JSON."""
    for folder in (path, path / "dslr"):
        if (folder / RAW_JSON).is_file() or (folder / UNDISTORTED_JSON).is_file():
            return folder
    return None


def read_split(path: Path, scenes: Path, field: str = "config.split") -> list[str]:
    """The scene ids of the split file ``path``; every one must have its folder in ``scenes``."""
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.txt"))
        raise SceneError(f"{path}: no such split file ({field}={path.stem!r}; splits there: {', '.join(known) or 'none'})")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise SceneError(f"{path}: the split lists no scenes")
    for number, scene_id in enumerate(ids, 1):
        if not (scenes / scene_id).is_dir():
            raise SceneError(f"{path}:{number}: scene {scene_id!r} has no folder {scenes / scene_id}")
    return ids


def split_names(splits: str) -> list[str]:
    return [s.strip() for s in splits.split(",") if s.strip()]


def split_scenes(root: Path, splits: str) -> list[Path]:
    """The scenes of the comma-separated ``splits`` of a release root (their ``dslr/`` folders) or of
    FiT3D's data root (its scene folders; every scene there when no split is named)."""
    if is_fit3d_root(root):
        if not split_names(splits):
            return sorted(p for p in (root / FIT3D_SCENES).iterdir() if p.is_dir())
        return [root / FIT3D_SCENES / i for s in split_names(splits)
                for i in read_split(root / FIT3D_METADATA / f"{s}.txt", root / FIT3D_SCENES)]
    if not split_names(splits):
        known = sorted(p.stem for p in (root / SPLITS_DIR).glob("*.txt"))
        raise SceneError(f"{root} is a ScanNet++ release root: name its split(s) with config.split (here: {', '.join(known)})")
    return [root / DATA_DIR / i / "dslr" for s in split_names(splits)
            for i in read_split(root / SPLITS_DIR / f"{s}.txt", root / DATA_DIR)]


def _undistorted_dirs(dslr: Path, json_path: Path) -> tuple[Path, Path]:
    """The (images, masks) folders the undistorted JSON's frames are in: of the candidates that
    hold the first frame, the one whose image has the JSON's size."""
    meta = nerfstudio.read_json(json_path)
    try:
        first, size = meta["frames"][0]["file_path"], (meta["w"], meta["h"])
    except (KeyError, IndexError, TypeError):
        first, size = None, None  # the JSON reader names what is missing
    present = [(dslr / a, dslr / b) for a, b in UNDISTORTED_DIRS if (dslr / a / str(first)).is_file()]
    for images, masks in present:
        if validation.image_size(images / first, str(json_path)) == tuple(size):
            return images, masks
    if present:
        return present[0]
    raise SceneError(f"{json_path}: frames[0].file_path {first!r} is in none of "
                     f"{', '.join(str(dslr / a) for a, _ in UNDISTORTED_DIRS)}: the undistorted images are missing")


def read_dslr(dslr: Path) -> SceneData:
    """An undistorted toolkit ``dslr/`` folder; its scene is named by the scene folder's name."""
    json_path = dslr / UNDISTORTED_JSON
    if json_path.is_file():
        images, masks = _undistorted_dirs(dslr, json_path)
    else:  # only the fisheye JSON: the reader refuses it, naming the camera model
        json_path, (images, masks) = dslr / RAW_JSON, (dslr / d for d in RAW_DIRS)
    return nerfstudio.read_transforms(
        json_path, name=dslr.resolve().parent.name, root=dslr, image_dirs=[images], frame_dirs={"mask_path": [masks]},
        points_path=dslr / "colmap" / "points3D.txt",
    )
