"""Job ``lift``: stage I for one or many scenes, split across local devices and processes.

Everything is checked before any scene is fitted: the settings, the output folder, every scene's
files (every image decoded), and that the scenes' output names are distinct."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import jax
import ml_collections

from fit3d_jax import jobs
from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.jobs.weights_fields import load_configured_weights
from fit3d_jax.lift.fit import fit_scene
from fit3d_jax.lift.trainer import Recipe
from fit3d_jax.scenes import SceneData, SceneError, find_scenes, load_scene, verify_pixels
from fit3d_jax.scenes.synthetic import RoomParameterError, ensure_room

BUDGETS = ("auto", "paper", "quick")
POSITIVE = ("iterations", "feature_dim", "densify_every", "sh_every", "lr_means", "lr_means_final", "lr_scales", "lr_quats",
            "lr_opacity", "lr_sh_dc", "lr_sh_rest", "lr_features", "lr_decoder", "percent_dense", "max_screen_size")
NOT_NEGATIVE = ("lambda_dssim", "lambda_feature", "densify_from", "densify_until", "densify_grad_threshold", "min_opacity",
                "opacity_reset_every", "size_prune_from")


def recipe_from(config: ml_collections.ConfigDict) -> tuple[Recipe, str]:
    """The recipe and the budget it runs under. The quick preset replaces recipe fields, except those
    the command line set: an explicit ``--config.recipe.x`` wins, and the run says so."""
    if config.budget not in BUDGETS:
        raise ConfigError(f"config.budget={config.budget!r} is not one of {BUDGETS}")
    budget = config.budget if config.budget != "auto" else ("quick" if jax.default_backend() == "cpu" else "paper")
    fields, kept = config.recipe.to_dict(), []
    if budget == "quick":
        kept = [k for k in config.quick if jobs.overridden(f"recipe.{k}")]
        fields |= {k: v for k, v in config.quick.items() if k not in kept}
        if kept:
            print(f"quick budget: keeping {', '.join(f'recipe.{k}={fields[k]}' for k in kept)} as given "
                  f"(the preset has {', '.join(f'{k}={config.quick[k]}' for k in kept)})")
    try:
        recipe = Recipe(**fields)
    except TypeError as e:
        raise ConfigError(f"config.recipe / config.quick: {e}") from None
    for names, ok, rule in ((POSITIVE, lambda v: v > 0, "> 0"), (NOT_NEGATIVE, lambda v: v >= 0, ">= 0")):
        for field in names:
            if not ok(getattr(recipe, field)):
                source = "config.quick" if budget == "quick" and field in config.quick and field not in kept else "config.recipe"
                raise ConfigError(f"{source}.{field}={getattr(recipe, field)} must be {rule}")
    return recipe, budget


def check_settings(config: ml_collections.ConfigDict) -> None:
    for field in ("log_every", "checkpoint_every"):
        if config[field] < 1:
            raise ConfigError(f"config.{field}={config[field]} must be >= 1")
    if config.test_every < 0:
        raise ConfigError(f"config.test_every={config.test_every} must be >= 0")


def scene_paths(config: ml_collections.ConfigDict) -> list[Path]:
    """The scenes to lift: the built-in room (generated once) or the configured folders."""
    if not config.scenes:
        room = config.room
        path = Path(room.output_dir) / f"room_{room.seed:04d}_{room.width}x{room.height}_{room.num_train}+{room.num_test}"
        try:  # generated on first use, reused afterwards
            return [ensure_room(path, seed=room.seed, width=room.width, height=room.height, num_train=room.num_train, num_test=room.num_test)]
        except (RoomParameterError, FileExistsError) as e:
            raise ConfigError(f"config.room: {e}") from None
    skipped = [] if config.skip_non_scenes else None
    try:
        paths = find_scenes(config.scenes, config.split, skipped=skipped)
    except SceneError as e:
        raise ConfigError(f"config.scenes: {e}") from None
    for line in skipped or ():
        print(f"skipped {line}")
    return paths


def distinct_names(scenes: list[SceneData]) -> list[SceneData]:
    """Scenes renamed where their folder names collide: the colliding ones take their parent
    folders' names in front (A/scene, B/scene -> A_scene, B_scene), so no two share outputs."""
    roots = [s.root.resolve() for s in scenes]
    for i, root in enumerate(roots):
        if root in roots[:i]:
            raise ConfigError(f"config.scenes names {root} twice")
    parts = [[s.name] + [p for p in reversed(r.parts[1:]) if p != s.name] for s, r in zip(scenes, roots, strict=True)]
    depth = [1] * len(scenes)
    while True:
        names = [outputs.safe_name("_".join(reversed(p[:d]))) for p, d in zip(parts, depth, strict=True)]
        clashes = {n for n in names if names.count(n) > 1}
        if not clashes:
            break
        depth = [d + 1 if n in clashes else d for n, d in zip(names, depth, strict=True)]
    renamed = []
    for scene, name in zip(scenes, names, strict=True):
        if name != scene.name:
            print(f"{scene.root}: written as {name!r} (another scene is also named {scene.name!r})")
        renamed.append(dataclasses.replace(scene, name=name))
    return renamed


def run(config: ml_collections.ConfigDict) -> None:
    recipe, budget = recipe_from(config)
    check_settings(config)
    output_dir = outputs.output_dir(config.output_dir, "config.output_dir")
    paths = scene_paths(config)
    # Every scene, every image decoded, before hours of fitting start.
    try:
        scenes = distinct_names([load_scene(p, test_every=config.test_every) for p in paths])
        fingerprints = [verify_pixels(s) for s in scenes]
    except SceneError as e:
        raise ConfigError(f"config.scenes: {e}") from None
    for scene in scenes:
        outputs.claim_run(outputs.inside(output_dir / scene.name, output_dir), "lift", "config.output_dir")
        for note in scene.notes:
            print(f"{scene.name}: {note}")
    outputs.claim_run(output_dir / "store", "lift", "config.output_dir")
    weights = load_configured_weights(config)
    print(f"lifting {len(scenes)} scene(s), {recipe.iterations} iterations each ({budget} budget)")

    # Scene i goes to global slot i mod (processes x local devices); each local device runs its
    # scenes one after another in its own thread.
    slots = jax.process_count() * jax.local_device_count()
    devices = jax.local_devices()
    mine = {d: [i for i in range(len(scenes)) if i % slots == jax.process_index() * len(devices) + k] for k, d in enumerate(devices)}
    results, errors = [], []

    def work(device, assigned):
        try:
            with jax.default_device(device):
                for i in assigned:
                    results.append(fit_scene(
                        scenes[i], weights, recipe, output_dir, seed=config.seed, log_every=config.log_every,
                        checkpoint_every=config.checkpoint_every, progress=config.progress and len(devices) == 1,
                        fingerprint=fingerprints[i],
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
    for m in sorted(results, key=lambda m: m["scene"]):
        print(
            f"{m['scene']}: {m['split']} PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, feature L1 {m['feature_l1']:.4f}, "
            f"cosine {m['feature_cosine']:.3f}, {m['gaussians']} Gaussians, {m['wall_seconds']:.0f} s"
        )
    print(f"outputs: {output_dir}/<scene>/ (point_cloud.ply, renders/, metrics.json, checkpoints/); stage II store: {output_dir}/store/")
