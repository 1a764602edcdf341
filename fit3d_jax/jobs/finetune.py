"""Job ``finetune``: stage II over the stage I store, then original-vs-fine-tuned comparisons."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections

from fit3d_jax import images, viz
from fit3d_jax.errors import ConfigError
from fit3d_jax.finetune.store import check_images, check_weights, load_store, store_fingerprint
from fit3d_jax.finetune.train import Recipe, finetune
from fit3d_jax.harness import outputs
from fit3d_jax.jobs.weights_fields import compute_dtype, load_configured_weights
from fit3d_jax.models.dinov2 import FORWARD_COMPILER_OPTIONS, DinoV2
from fit3d_jax.scenes import SceneError


def _recipe(config: ml_collections.ConfigDict) -> Recipe:
    try:
        recipe = Recipe(**config.recipe.to_dict())
    except TypeError as e:
        raise ConfigError(f"config.recipe: {e}") from None
    return recipe


def compare(original: dict, tuned: dict, model: DinoV2, image_paths: list[Path], out_dir: Path, num_clusters: int) -> int:
    """image | PCA original | PCA fine-tuned | K-means original | K-means fine-tuned, per image."""
    extract = jax.jit(lambda params, x: model.apply({"params": params}, x).patch_tokens, compiler_options=FORWARD_COMPILER_OPTIONS)
    key = jax.random.key(0)
    for path in image_paths:
        image = images.resize_to_patch_multiple(images.load_image(path), patch_size=model.config.patch_size)
        x = images.normalize(image, model.config.input_statistics)[None]
        maps = [extract(original, x)[0], extract(tuned, x)[0]]
        viz.save_png(out_dir / f"{Path(path).parent.parent.name}_{Path(path).stem}.png", viz.feature_panels(image, maps, num_clusters, key))
    return len(image_paths)


def loss_summary(summary: dict) -> str:
    """What the run measured of its loss: the first and last logged values and their steps."""
    steps = summary["logged_steps"]
    if not steps:
        return "no step logged"
    first, last = summary["first_logged_loss"], summary["last_logged_loss"]
    if steps[0] == steps[1]:
        return f"loss {first:.4f} at step {steps[0]} (the one logged step this run)"
    return f"loss {first:.4f} (step {steps[0]}) -> {last:.4f} (step {steps[1]})"


def run(config: ml_collections.ConfigDict) -> None:
    if config.distributed:
        jax.distributed.initialize()
    recipe = _recipe(config)
    dtype = compute_dtype(config)
    reduce_dtype = compute_dtype(config, "grad_reduce_dtype", allow_default=True)
    output_dir = outputs.claim_output_dir(config.output_dir, "finetune", "config.output_dir", [Path(config.store)],
                                          primary=jax.process_index() == 0)
    try:
        scenes = load_store(config.store)
    except SceneError as e:
        raise ConfigError(f"config.store: {e}") from None
    views = sum(len(s.views) for s in scenes)
    if recipe.batch_size > views:
        raise ConfigError(f"config.recipe.batch_size={recipe.batch_size} is more than the store's {views} training views")
    weights = load_configured_weights(config)
    try:
        check_weights(scenes, weights.fingerprint, weights.description)
    except SceneError as e:
        raise ConfigError(f"config.store={config.store!r} and config.weights={config.weights!r}: {e}") from None
    try:
        checked = check_images(scenes)
    except SceneError as e:
        raise ConfigError(f"config.store={config.store!r}: {e}") from None
    print(f"finetune: the {checked} image and mask files hold what the lift saw")
    print(f"finetune: {len(scenes)} scene(s), {sum(len(s.views) for s in scenes)} training views, "
          f"{jax.device_count()} device(s), global batch {recipe.batch_size}")
    state, summary = finetune(
        scenes, weights.params, weights.config, recipe, output_dir, dtype=dtype,
        reduce_dtype=reduce_dtype, seed=config.seed,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every, device_cache_gb=config.device_cache_gb,
        progress=config.progress, max_steps=config.max_steps or None,
        identity={"store": store_fingerprint(config.store), "weights": weights.description},
    )
    print(f"finetune: {summary['steps']} steps, {summary['views_per_second']:.1f} views/s this run, {loss_summary(summary)}")

    if jax.process_index() == 0:
        tuned = jax.device_get(state.params)
        model = DinoV2(weights.config, dtype=jnp.float32)
        held_out = [v.image for s in scenes for v in s.test_views][: config.compare_views]
        extra = images.list_images(config.compare_dir) if config.compare_dir else []
        n = compare(weights.params, tuned, model, held_out + extra, output_dir / "compare", config.num_clusters)
        ckpt = (output_dir / "checkpoints").absolute()
        print(f"finetune: {n} comparison PNGs in {(output_dir / 'compare').absolute()}")
        print(f"finetune: checkpoints in {ckpt}; to PyTorch: python -m fit3d_jax.main --config=configs/convert_torch.py "
              f"--config.checkpoint={ckpt} --config.output={output_dir.absolute() / 'dinov2_fit3d.pth'}")
