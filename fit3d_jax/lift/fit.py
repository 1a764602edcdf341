"""Lifting one scene end to end: targets, fitting with checkpoints, evaluation and outputs.

Outputs under ``<output_dir>/<scene>/``: ``checkpoints/`` (Orbax: Gaussians, decoder, optimiser
state, iteration; a killed run resumes from the latest), ``point_cloud.ply`` (3DGS layout plus
features), ``renders/`` (held-out views), ``train_log.jsonl`` and ``metrics.json``; the store entry
for stage II goes to ``<output_dir>/store/``.
"""

from __future__ import annotations

import concurrent.futures
import json
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from fit3d_jax.checkpointing import Checkpoints
from fit3d_jax.lift import export, targets, trainer
from fit3d_jax.lift.gaussians import init_from_points
from fit3d_jax.scenes import SceneData, SceneError, View, read_image, read_mask
from fit3d_jax.viz import save_png
from fit3d_jax.weights import LoadedWeights


def scene_arrays(views: list[View], view_targets: np.ndarray) -> trainer.SceneArrays:
    width, height = views[0].width, views[0].height
    for v in views:
        if (v.width, v.height) != (width, height):
            raise SceneError(f"{v.image_path}: {v.width}x{v.height}, but other views are {width}x{height}; a scene must use one size")
    masks = []
    for v in views:
        m = read_mask(v)
        masks.append(np.ones((height, width), np.float32) if m is None else m.astype(np.float32))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # PNG decoding releases the GIL
        images = np.stack(list(pool.map(read_image, views)))
    return trainer.SceneArrays(
        images=jnp.asarray(images),
        masks=jnp.asarray(np.stack(masks)),
        targets=jnp.asarray(view_targets),
        viewmats=jnp.asarray(np.stack([v.world_to_camera for v in views]), jnp.float32),
        intrinsics=jnp.asarray([[v.fx, v.fy, v.cx, v.cy] for v in views], jnp.float32),
        width=width,
        height=height,
    )


def initial_capacity(num_points: int) -> int:
    return 1 << max(14, int(np.ceil(np.log2(2 * num_points))))


def restore_latest(checkpoints: Checkpoints, fresh: trainer.LiftState) -> trainer.LiftState | None:
    """The newest saved LiftState. Its capacity is saved beside it (item ``meta``): growth and
    compaction change the buffers' shapes, and the restore template must have the saved ones."""
    step = checkpoints.latest_step()
    if step is None:
        return None
    meta = checkpoints.restore(step, meta=ocp.args.JsonRestore())["meta"]
    template = trainer.resize_state(fresh, meta["capacity"])
    return checkpoints.restore(step, state=ocp.args.StandardRestore(template))["state"]


def peak_memory() -> dict:
    """Peak device memory where the backend reports it, and the process's peak resident memory."""
    stats = jax.devices()[0].memory_stats() or {}
    out = {"peak_host_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    if "peak_bytes_in_use" in stats:
        out["peak_device_gb"] = stats["peak_bytes_in_use"] / 1e9
    return out


def fit_scene(
    scene: SceneData,
    weights: LoadedWeights,
    recipe: trainer.Recipe,
    output_dir: Path,
    *,
    seed: int = 0,
    log_every: int = 100,
    checkpoint_every: int = 1000,
    progress: bool = True,
) -> dict:
    """Lifts ``scene``; resumes from its latest checkpoint if one exists. Returns the metrics."""
    start = time.time()
    out = Path(output_dir) / scene.name
    views = list(scene.train) + list(scene.test)
    t0 = time.time()
    all_targets = targets.cached_targets(out / "cache", views, weights)
    target_seconds = time.time() - t0
    train = scene_arrays(list(scene.train), all_targets[: len(scene.train)])
    test = scene_arrays(list(scene.test), all_targets[len(scene.train) :]) if scene.test else train
    extent = trainer.scene_extent([v.camera_center for v in scene.train])
    key = jax.random.key(seed)

    gaussians, active = init_from_points(scene.points, scene.point_colors, recipe.feature_dim, initial_capacity(len(scene.points)))
    state = trainer.init_state(gaussians, active, recipe, extent, all_targets.shape[-1], key)
    checkpoints = Checkpoints(out / "checkpoints")
    resumed = restore_latest(checkpoints, state)
    if resumed is not None:
        state = resumed
        print(f"{scene.name}: resuming from iteration {int(state.iteration)}")

    step = trainer.make_train_step(recipe, extent, all_targets.shape[-1])
    log = open(out / "train_log.jsonl", "a")
    bar = tqdm(total=recipe.iterations, initial=int(state.iteration), desc=scene.name, disable=not progress, unit="it")
    densify_seconds = 0.0
    it = int(state.iteration)  # mirrored on the host so that steps are not synchronised
    try:
        while it < recipe.iterations:
            state, aux = step(state, train, trainer.view_for_iteration(it + 1, len(scene.train), seed))
            it += 1
            if trainer.density_control_due(it, recipe):
                jax.block_until_ready(state)
                t0 = time.time()
                state = jax.block_until_ready(trainer.densify_if_due(state, it, recipe, extent, key))
                densify_seconds += time.time() - t0
            bar.update(1)
            if it % log_every == 0 or it == recipe.iterations:
                record = {k: float(v) for k, v in aux.items()} | {"iteration": it, "gaussians": int(state.active.sum())}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}", feat=f"{record['feature_l1']:.4f}", n=record["gaussians"])
            if it % checkpoint_every == 0 or it == recipe.iterations:
                meta = {"capacity": state.capacity, "iteration": it}
                checkpoints.save(it, state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    finally:
        bar.close()
        log.close()
        checkpoints.close()
    train_seconds = time.time() - start - target_seconds

    t0 = time.time()
    metrics = evaluate_and_export(scene, state, test, out, all_targets.shape[-1])
    evaluate_seconds = time.time() - t0
    describe = lambda views: [
        dict(image=str(v.image_path.absolute()), mask=str(v.mask_path.absolute()) if v.mask_path else None, width=v.width,
             height=v.height, fx=v.fx, fy=v.fy, cx=v.cx, cy=v.cy, world_to_camera=np.asarray(v.world_to_camera).tolist())
        for v in views
    ]
    export.write_store_entry(
        Path(output_dir) / "store", scene.name, state.gaussians, state.active, state.decoder["Conv_0"]["kernel"],
        describe(scene.train), describe(scene.test),
    )
    metrics |= {
        "scene": scene.name,
        "iterations": int(state.iteration),
        "gaussians": int(state.active.sum()),
        "wall_seconds": time.time() - start,
        "target_seconds": target_seconds,
        "train_seconds": train_seconds,
        "density_control_seconds": densify_seconds,
        "evaluate_and_export_seconds": evaluate_seconds,  # held-out metrics, render panels, PLY
        "device": jax.devices()[0].device_kind,
        "weights": weights.description,
    } | peak_memory()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def evaluate_and_export(scene: SceneData, state: trainer.LiftState, data: trainer.SceneArrays, out: Path, decoder_dim: int) -> dict:
    """Held-out metrics (means over views), render panels and the PLY."""
    evaluate = trainer.make_eval(decoder_dim)
    views = list(scene.test) or list(scene.train)
    per_view = []
    for i, view in enumerate(views):
        metrics, render, decoded, target = evaluate(state, data, i)
        per_view.append({k: float(v) for k, v in metrics.items()})
        image = np.asarray(data.images[i]) / 255.0
        save_png(out / "renders" / f"{view.name}.png", export.view_panel(render.rgb, image, decoded, target, render.depth, render.alpha))
    export.write_ply(out / "point_cloud.ply", state.gaussians, state.active)
    split = "test" if scene.test else "train (no test views)"
    return {"split": split} | {k: float(np.mean([m[k] for m in per_view])) for k in per_view[0]}
