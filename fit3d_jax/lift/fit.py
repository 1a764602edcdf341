"""Lifting one scene end to end, for one backbone or several at once: targets, fitting with
checkpoints, evaluation and outputs.

Outputs under ``<output_dir>/<scene>/``: ``checkpoints/`` (Orbax: Gaussians, decoders, optimiser
state, iteration, and the run's identity; a killed run resumes from the latest),
``train_log.jsonl`` and TensorBoard events, ``metrics.json``, and per backbone (in
``<scene>/<name>/`` for a named one, ``lift.backbones``) ``point_cloud.ply`` (3DGS layout plus its
features) and ``renders/`` (held-out views); each backbone's store entry for stage II goes to
``<output_dir>/store/`` (``store/<name>/``). Nothing non-finite is written: the run stops at the
first non-finite loss or gradient.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from fit3d_jax.harness import guard, outputs
from fit3d_jax.harness.checkpoints import Checkpoints
from fit3d_jax.harness.loop import TrainLoop
from fit3d_jax.lift import backbones as backbones_lib
from fit3d_jax.lift import export, targets, trainer
from fit3d_jax.lift.backbones import Backbone
from fit3d_jax.lift.gaussians import init_from_points
from fit3d_jax.lift.state import LiftState, resize_state
from fit3d_jax.lift.strategy import DefaultStrategy, Strategy, describe
from fit3d_jax.scenes import SceneData, SceneError, View, read_image, read_mask, verify_pixels
from fit3d_jax.scenes.pixels import file_digest
from fit3d_jax.viz import save_png
from fit3d_jax.weights import LoadedWeights


def scene_arrays(views: list[View], view_targets: tuple[np.ndarray, ...]) -> trainer.SceneArrays:
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
        targets=tuple(jnp.asarray(t) for t in view_targets),
        viewmats=jnp.asarray(np.stack([v.world_to_camera for v in views]), jnp.float32),
        intrinsics=jnp.asarray([[v.fx, v.fy, v.cx, v.cy] for v in views], jnp.float32),
        width=width,
        height=height,
    )


def initial_capacity(num_points: int) -> int:
    return 1 << max(14, int(np.ceil(np.log2(2 * num_points))))


def peak_memory() -> dict:
    """Peak device memory where the backend reports it, and the process's peak resident memory."""
    stats = jax.devices()[0].memory_stats() or {}
    out = {"peak_host_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
    if "peak_bytes_in_use" in stats:
        out["peak_device_gb"] = stats["peak_bytes_in_use"] / 1e9
    return out


def identity(scene: SceneData, fingerprint: str, recipe: trainer.Recipe, strategy: Strategy, backbones: tuple[Backbone, ...],
             seed: int) -> dict:
    """What a lift's checkpoints belong to: a resume checks it before reading any state. The run's
    length is not part of it: a finished run may be extended (its schedules follow the new length)."""
    recipe_fields = {k: v for k, v in dataclasses.asdict(recipe).items() if k != "iterations"}
    return {"stage": "lift", "scene": str(scene.root.resolve()), "fingerprint": fingerprint, "recipe": recipe_fields,
            "strategy": describe(strategy), "seed": seed, "backbones": backbones_lib.identity(backbones)}


def restore(checkpoints: Checkpoints, fresh: LiftState) -> LiftState | None:
    """The newest intact LiftState of this run. Its capacity is saved beside it (item ``meta``):
    growth and compaction change the buffers' shapes, and the restore template must have the saved ones."""

    def read(step: int) -> LiftState:
        meta = checkpoints.restore(step, meta=ocp.args.JsonRestore())["meta"]
        template = resize_state(fresh, meta["capacity"])
        return checkpoints.restore(step, state=ocp.args.StandardRestore(template))["state"]

    found = checkpoints.restore_latest(read)
    return None if found is None else found[1]


def fit_scene(
    scene: SceneData,
    models: LoadedWeights | Sequence[Backbone],
    recipe: trainer.Recipe,
    output_dir: Path,
    *,
    seed: int = 0,
    log_every: int = 100,
    checkpoint_every: int = 1000,
    progress: bool = True,
    fingerprint: str | None = None,
    strategy: Strategy | None = None,
) -> dict:
    """Lifts ``scene`` into ``output_dir/<scene name>``; resumes from its latest checkpoint if one
    exists. ``models``: the weights of one backbone, or named ``Backbone``s lifted together on one
    geometry. ``fingerprint``: the scene's content (``scenes.verify_pixels``; computed if not
    given); ``strategy``: how the Gaussians densify (default: the authors' ``DefaultStrategy``).
    Returns the metrics; stops with NonFiniteError at the first non-finite loss or gradient."""
    start = time.time()
    backbones = backbones_lib.as_backbones(models)
    out = outputs.inside(Path(output_dir) / scene.name, output_dir)
    if fingerprint is None:
        fingerprint = verify_pixels(scene)
    verify_seconds = time.time() - start
    strategy = strategy or DefaultStrategy()
    views = list(scene.train) + list(scene.test)
    extent = trainer.scene_extent([v.camera_center for v in scene.train])
    key = jax.random.key(seed)
    gaussians, active = init_from_points(scene.points, scene.point_colors, recipe.feature_dim * len(backbones),
                                         initial_capacity(len(scene.points)))
    state = trainer.init_state(gaussians, active, recipe, strategy, extent, tuple(b.dim for b in backbones), key)
    checkpoints = Checkpoints(out / "checkpoints", identity(scene, fingerprint, recipe, strategy, backbones, seed))
    resumed = restore(checkpoints, state)
    if resumed is not None:
        state = resumed
        print(f"{scene.name}: resuming from iteration {int(state.iteration)}")
    step = trainer.make_train_step(recipe, strategy, extent, backbones)
    it = int(state.iteration)  # mirrored on the host so that steps are not synchronised
    where = f"lift {scene.name}"
    try:
        with TrainLoop(where, out, total=recipe.iterations, start=it, log_every=log_every, checkpoint_every=checkpoint_every,
                       progress=progress, guarded=trainer.guarded(backbones), unit="it") as loop:
            with loop.timed("targets"):
                dtype = trainer.DTYPES[recipe.target_dtype]
                all_targets = [targets.cached_targets(out / "cache", views, b.weights, fingerprint, dtype) for b in backbones]
                train = scene_arrays(list(scene.train), tuple(t[: len(scene.train)] for t in all_targets))
                test = scene_arrays(list(scene.test), tuple(t[len(scene.train):] for t in all_targets)) if scene.test else train
            fitting = time.time()
            while it < recipe.iterations:
                state, aux = step(state, train, trainer.view_for_iteration(it + 1, len(scene.train), seed))
                it += 1
                if strategy.due(it, recipe.iterations):
                    jax.block_until_ready(state)  # the queued steps are not density control's time
                    with loop.timed("density control"):
                        state = jax.block_until_ready(strategy.apply(state, it, recipe.iterations, extent, key))
                loop.step_done(
                    it, state.nonfinite, lambda aux=aux, state=state: aux | {"gaussians": state.active.sum()},
                    save=lambda it=it, state=state: checkpoints.save(
                        it, state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"capacity": state.capacity, "iteration": it})),
                )
            loop.check(state.nonfinite)  # a sync: the fitting is done
            fitting = time.time() - fitting
            guard.check_tree({"gaussians": state.gaussians, "decoders": state.decoders}, where)
            with loop.timed("evaluate and export"):
                metrics = evaluate_and_export(scene, state, test, out, recipe, backbones)
                for k, backbone in enumerate(backbones):
                    write_store(backbone.folder(Path(output_dir) / "store"), scene, state, k, recipe.feature_dim, backbone)
            split = loop.time_split()
    finally:
        checkpoints.close()
    metrics |= {
        "scene": scene.name,
        "iterations": int(state.iteration),
        "gaussians": int(state.active.sum()),
        "wall_seconds": time.time() - start,
        "verify_seconds": verify_seconds,  # decoding every file for the fingerprint, where the caller had none
        "target_seconds": split.get("targets", 0.0),
        "train_seconds": fitting,  # the training loop: steps, density control, checkpoints
        "density_control_seconds": split.get("density control", 0.0),
        "checkpoint_seconds": split.get("checkpoints", 0.0),
        "evaluate_and_export_seconds": split.get("evaluate and export", 0.0),
        "device": jax.devices()[0].device_kind,
        **{b.key("weights"): b.weights.description for b in backbones},
    } | peak_memory()
    outputs.write_json(out / "metrics.json", metrics)
    return metrics


def _describe(views) -> list[dict]:
    """The views as the store records them, with their files' content (stage II checks it)."""
    return [dict(image=str(v.image_path.absolute()), mask=str(v.mask_path.absolute()) if v.mask_path else None, width=v.width,
                 height=v.height, fx=v.fx, fy=v.fy, cx=v.cx, cy=v.cy, world_to_camera=np.asarray(v.world_to_camera).tolist(),
                 image_digest=file_digest(v.image_path), mask_digest=file_digest(v.mask_path) if v.mask_path else None)
            for v in views]


def write_store(store_dir: Path, scene: SceneData, state: LiftState, k: int, feature_dim: int, backbone: Backbone) -> None:
    """Backbone ``k``'s store entry: the geometry, its feature slice and decoder, and its weights."""
    gaussians = state.gaussians.replace(features=state.gaussians.features[:, k * feature_dim:(k + 1) * feature_dim])
    weights = {"fingerprint": backbone.weights.fingerprint, "description": backbone.weights.description}
    export.write_store_entry(store_dir, scene.name, gaussians, state.active, trainer.kernel(state.decoders[k]),
                             _describe(scene.train), _describe(scene.test), weights)


def evaluate_and_export(scene: SceneData, state: LiftState, data: trainer.SceneArrays, out: Path, recipe: trainer.Recipe,
                        backbones: tuple[Backbone, ...]) -> dict:
    """Held-out metrics (means over views), render panels and a PLY per backbone."""
    evaluate = trainer.make_eval(recipe, backbones)
    views = list(scene.test) or list(scene.train)
    per_view = []
    for i, view in enumerate(views):
        metrics, render, pairs = evaluate(state, data, i)
        per_view.append({k: float(v) for k, v in metrics.items()})
        image = np.asarray(data.images[i]) / 255.0
        for backbone, (decoded, target) in zip(backbones, pairs):
            save_png(backbone.folder(out) / "renders" / f"{view.name}.png",
                     export.view_panel(render.rgb, image, decoded, target, render.depth, render.alpha))
    for k, backbone in enumerate(backbones):
        features = state.gaussians.features[:, k * recipe.feature_dim:(k + 1) * recipe.feature_dim]
        export.write_ply(backbone.folder(out) / "point_cloud.ply", state.gaussians.replace(features=features), state.active)
    split = "test" if scene.test else "train (no test views)"
    return {"split": split} | {k: float(np.mean([m[k] for m in per_view])) for k in per_view[0]}
