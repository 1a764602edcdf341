"""Job ``prepare_scannetpp``: a raw ScanNet++ download -> FiT3D's data root (scene folders, split
files) and, with ``probe_data``, the probe ground truth in FiT3D's evaluation layout. Everything is
checked before any scene is written; scenes run in parallel processes and resume."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import time
from pathlib import Path

import ml_collections

from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.scenes import SceneError, scannetpp
from fit3d_jax.scenes.scannetpp_prepare import MARKER, SUBSETS, VERSION, check_raw, marker, prepare_scene, write_probe_truth


def _plan(config: ml_collections.ConfigDict) -> tuple[Path, Path, list[tuple[str, str | None, bool, bool]], dict[str, list[str]]]:
    """(root, output, [(scene id, probe subset, prepare?, probe?)], split -> ids), all checked."""
    root = Path(config.data_root)
    if not config.data_root or not scannetpp.is_root(root):
        raise ConfigError(f"config.data_root={config.data_root!r} is not a ScanNet++ download (a folder with data/ and "
                          "splits/, as the ScanNet++ download script writes it)")
    outputs.apart_from_inputs(Path(config.output_dir), [root], "config.output_dir", "the download (config.data_root)")
    out = outputs.output_dir(config.output_dir, "config.output_dir")
    outputs.lock(out, "config.output_dir")
    names = scannetpp.split_names(config.splits)
    if not names:
        raise ConfigError("config.splits names no split")
    if config.probe_data and config.probe_training_split == config.probe_validation_split:
        raise ConfigError(f"config.probe_training_split and config.probe_validation_split are both {config.probe_training_split!r}")
    subsets = {config.probe_training_split: "training", config.probe_validation_split: "validation"} if config.probe_data else {}
    for split in subsets:
        if split not in names:
            raise ConfigError(f"config.probe_*_split={split!r} is not among config.splits={config.splits!r}")
    try:
        splits = {s: scannetpp.read_split(root / scannetpp.SPLITS_DIR / f"{s}.txt", root / scannetpp.DATA_DIR, "config.splits")
                  for s in names}
    except SceneError as e:
        raise ConfigError(str(e)) from None
    if subsets and not (root / scannetpp.CLASSES_FILE).is_file():
        raise ConfigError(f"config.probe_data: {root / scannetpp.CLASSES_FILE} is missing (the semantic classes)")
    plan, seen = [], set()
    for split, ids in splits.items():
        for scene_id in ids:
            if scene_id in seen:
                continue
            seen.add(scene_id)
            dslr = root / scannetpp.DATA_DIR / scene_id / "dslr"
            for needed in (scannetpp.RAW_JSON, scannetpp.RAW_DIRS[0], scannetpp.RAW_DIRS[1], Path("colmap") / "points3D.txt"):
                if not (dslr / needed).exists():
                    raise ConfigError(f"scene {scene_id}: {dslr / needed} is missing (download its DSLR assets)")
            subset = subsets.get(split)
            if subset and not (dslr.parent / scannetpp.MESH).is_file():
                raise ConfigError(f"scene {scene_id}: {dslr.parent / scannetpp.MESH} is missing (probe_data renders from it)")
            target = out / scannetpp.FIT3D_SCENES / scene_id
            outputs.remove_stale_staging(target)
            record = _record(dslr, config.downscale_factor)
            done = marker(target)
            if target.exists() and done is None:
                raise ConfigError(f"{target} exists and was not written by prepare_scannetpp (no {MARKER}); not replacing it")
            if done is not None and {k: done.get(k) for k in record} != record and not config.overwrite:
                raise ConfigError(f"{target} was prepared with other settings ({done.get('downscale_factor')=}, "
                                  f"{done.get('source')=}); set config.overwrite=True to redo it")
            prepare = done is None or {k: done.get(k) for k in record} != record
            if prepare:
                try:
                    check_raw(dslr)
                except SceneError as e:
                    raise ConfigError(str(e)) from None
            probe = bool(subset) and (prepare or done.get("probe", {}).get("subset") != subset)
            plan.append((scene_id, subset, prepare, probe))
    return root, out, plan, splits


def _record(dslr: Path, factor: float) -> dict:
    """What a prepared scene's marker records, and a later run compares."""
    return {"version": VERSION, "source": str(dslr.resolve()), "downscale_factor": float(factor)}


def _one(root: Path, out: Path, scene_id: str, subset: str | None, prepare: bool, probe: bool, factor: float,
         classes: tuple[str, ...]) -> str:
    """Prepares one scene (and its probe data); returns its report line."""
    start = time.perf_counter()
    dslr = root / scannetpp.DATA_DIR / scene_id / "dslr"
    target = out / scannetpp.FIT3D_SCENES / scene_id
    report = prepare_scene(dslr, target, downscale=factor, record=_record(dslr, factor)) if prepare else marker(target)["report"]
    line = (f"{scene_id}: {'prepared' if prepare else 'kept'} {report['frames']} frames ({report['bad']} is_bad), "
            f"{report['width']}x{report['height']} PINHOLE fx {report['fx']:.2f}")
    if probe:
        truth = write_probe_truth(target, dslr.parent / "scans", out / "eval", subset, classes)
        done = marker(target)
        done["probe"] = dict(subset=subset, **truth)
        (target / MARKER).write_text(json.dumps(done, indent=1))
        line += (f"; probe {subset}: {len(truth['lines'])} views, depth valid {truth['depth_valid']:.1%}, "
                 f"labelled {truth['labelled']:.1%}")
    return line + f" ({time.perf_counter() - start:.1f} s)"


def run(config: ml_collections.ConfigDict) -> None:
    root, out, plan, splits = _plan(config)
    classes = tuple(line.strip() for line in (root / scannetpp.CLASSES_FILE).read_text().splitlines() if line.strip()) \
        if config.probe_data else ()
    if config.probe_data and classes != scannetpp.TOP100:
        print(f"note: {root / scannetpp.CLASSES_FILE} differs from FiT3D's 100 classes; labels follow the file, "
              "class names in probe outputs follow FiT3D's list")
    todo = [p for p in plan if p[2] or p[3]]
    print(f"prepare_scannetpp: {len(plan)} scenes of {', '.join(splits)}; {len(plan) - len(todo)} prepared before, {len(todo)} to do")
    jobs = [(root, out, *p, float(config.downscale_factor), classes) for p in todo]
    workers = min(config.workers or os.cpu_count() or 1, max(len(jobs), 1))
    try:
        if workers <= 1:
            for job in jobs:
                print(_one(*job), flush=True)
        else:
            # spawn: the parent may hold threads (JAX) that fork would copy in a broken state
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for future in concurrent.futures.as_completed([pool.submit(_one, *job) for job in jobs]):
                    print(future.result(), flush=True)
    except SceneError as e:
        raise ConfigError(f"config.data_root: {e}") from None

    metadata = out / scannetpp.FIT3D_METADATA
    metadata.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (metadata / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    if config.probe_data:
        for subset, filename in SUBSETS.items():
            lines = sorted(line for scene_id, s, _, _ in plan if s == subset
                           for line in marker(out / scannetpp.FIT3D_SCENES / scene_id)["probe"]["lines"])
            (out / "eval" / filename).write_text("".join(f"{line}\n" for line in lines))
    where = out.absolute()
    print(f"scenes: {where / scannetpp.FIT3D_SCENES}/<id>; lift them with\n"
          f"  python -m fit3d_jax.main --config=configs/lift.py --config.scenes={where} --config.split={next(iter(splits))}")
    if config.probe_data:
        print(f"probe data: {where / 'eval'}; probe the original model with\n"
              f"  python -m fit3d_jax.main --config=configs/probe_scannetpp.py --config.data.data_dir={where / 'eval'} "
              "--config.assembly=original\n"
              "  (FiT3D's concat assembly: --config.assembly=concat --config.finetuned=<the finetune job's output_dir>/checkpoints)")
