"""Job ``lift``: stage I for one or many scenes, split across local devices and processes."""

from __future__ import annotations

import threading
from pathlib import Path

import jax
import ml_collections

from fit3d_jax.config_errors import ConfigError
from fit3d_jax.jobs.weights_fields import load_configured_weights
from fit3d_jax.lift.fit import fit_scene
from fit3d_jax.lift.trainer import Recipe
from fit3d_jax.scenes import SceneError, find_scenes, load_scene
from fit3d_jax.scenes.synthetic import RoomParameterError, ensure_room

BUDGETS = ("auto", "paper", "quick")


def recipe_from(config: ml_collections.ConfigDict) -> Recipe:
    if config.budget not in BUDGETS:
        raise ConfigError(f"config.budget={config.budget!r} is not one of {BUDGETS}")
    fields = config.recipe.to_dict()
    if config.budget == "quick" or (config.budget == "auto" and jax.default_backend() == "cpu"):
        fields |= config.quick.to_dict()
    try:
        recipe = Recipe(**fields)
    except TypeError as e:
        raise ConfigError(f"config.recipe / config.quick: {e}") from None
    for field in ("iterations", "feature_dim", "densify_every", "sh_every"):
        if getattr(recipe, field) < 1:
            raise ConfigError(f"config.recipe.{field} must be >= 1, got {getattr(recipe, field)}")
    return recipe


def scene_paths(config: ml_collections.ConfigDict) -> list[Path]:
    """The scenes to lift: the built-in room (generated once) or the configured folders."""
    if not config.scenes:
        room = config.room
        path = Path(room.output_dir) / f"room_{room.seed:04d}_{room.width}x{room.height}_{room.num_train}+{room.num_test}"
        try:  # generated on first use, reused afterwards
            return [ensure_room(path, seed=room.seed, width=room.width, height=room.height, num_train=room.num_train, num_test=room.num_test)]
        except (RoomParameterError, FileExistsError) as e:
            raise ConfigError(f"config.room: {e}") from None
    try:
        return find_scenes(config.scenes, config.split)
    except SceneError as e:
        raise ConfigError(f"config.scenes: {e}") from None


def run(config: ml_collections.ConfigDict) -> None:
    recipe = recipe_from(config)
    paths = scene_paths(config)
    # Validate every scene up front so that a bad one fails the run before hours of fitting.
    try:
        scenes = [load_scene(p, test_every=config.test_every) for p in paths]
    except SceneError as e:
        raise ConfigError(f"config.scenes: {e}") from None
    for scene in scenes:
        for note in scene.notes:
            print(f"{scene.name}: {note}")
    weights = load_configured_weights(config)
    budget = config.budget if config.budget != "auto" else ("quick" if jax.default_backend() == "cpu" else "paper")
    print(f"lifting {len(scenes)} scene(s), {recipe.iterations} iterations each ({budget} budget)")

    # Scene i goes to global slot i mod (processes x local devices); each local device runs its
    # scenes one after another in its own thread.
    slots = jax.process_count() * jax.local_device_count()
    devices = jax.local_devices()
    mine = {d: [s for i, s in enumerate(scenes) if i % slots == jax.process_index() * len(devices) + k] for k, d in enumerate(devices)}
    results, errors = [], []

    def work(device, assigned):
        try:
            with jax.default_device(device):
                for scene in assigned:
                    results.append(fit_scene(
                        scene, weights, recipe, Path(config.output_dir), seed=config.seed, log_every=config.log_every,
                        checkpoint_every=config.checkpoint_every, progress=config.progress and len(devices) == 1,
                    ))
        except Exception as e:  # reported after all threads finish
            errors.append(e)

    threads = [threading.Thread(target=work, args=(d, s)) for d, s in mine.items() if s]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out = Path(config.output_dir).absolute()
    for m in sorted(results, key=lambda m: m["scene"]):
        print(
            f"{m['scene']}: {m['split']} PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, feature L1 {m['feature_l1']:.4f}, "
            f"cosine {m['feature_cosine']:.3f}, {m['gaussians']} Gaussians, {m['wall_seconds']:.0f} s"
        )
    print(f"outputs: {out}/<scene>/ (point_cloud.ply, renders/, metrics.json, checkpoints/); stage II store: {out}/store/")
