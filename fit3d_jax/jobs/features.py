"""Job ``features``: PNGs of a 2D model's patch features, image | PCA-RGB | K-means, per image."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from fit3d_jax import images, viz
from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.jobs.weights_fields import compute_dtype, load_configured_weights
from fit3d_jax.models.dinov2 import FORWARD_COMPILER_OPTIONS, DinoV2


def _inputs(config: ml_collections.ConfigDict) -> list[Path]:
    compute_dtype(config)  # checked before any work
    if not config.image_dir:
        return images.demo_images()
    try:
        return images.list_images(config.image_dir)
    except images.ImageError as e:
        raise ConfigError(f"config.image_dir: {e}") from None


def panel_names(paths: list[Path]) -> list[str]:
    """Each input's panel file name: its stem, or its whole name where stems collide (cat.jpg and
    cat.png give cat.jpg.png and cat.png.png), so no panel replaces another."""
    stems = [p.stem for p in paths]
    return [f"{p.stem if stems.count(p.stem) == 1 else p.name}.png" for p in paths]


def run(config: ml_collections.ConfigDict) -> None:
    paths = _inputs(config)
    inputs = [Path(config.image_dir)] if config.image_dir else []
    output_dir = outputs.claim_output_dir(config.output_dir, "features", "config.output_dir", inputs)
    loaded = []
    for path in paths:  # every image decoded before the model runs
        try:
            loaded.append(images.load_image(path))
        except images.ImageError as e:
            raise ConfigError(f"config.image_dir: {e}") from None
    weights = load_configured_weights(config)
    model = DinoV2(weights.config, dtype=compute_dtype(config))
    patch_size = weights.config.patch_size
    extract = jax.jit(lambda params, x: model.apply({"params": params}, x).patch_tokens, compiler_options=FORWARD_COMPILER_OPTIONS)
    key = jax.random.key(config.seed)
    for path, pixels in zip(paths, loaded):
        h, w = images.patch_multiple_size(*pixels.shape[:2], patch_size=patch_size, short_side=config.short_side or None)
        if config.num_clusters > (h // patch_size) * (w // patch_size):
            raise ConfigError(f"config.num_clusters={config.num_clusters} exceeds the {h // patch_size}x{w // patch_size} patches "
                              f"of {path}")
    for path, pixels, name in zip(paths, loaded, panel_names(paths)):
        image = images.resize_to_patch_multiple(pixels, patch_size=patch_size, short_side=config.short_side or None)
        h, w = image.shape[0] // patch_size, image.shape[1] // patch_size
        features = extract(weights.params, images.normalize(image, weights.config.input_statistics)[None])[0]
        panel = viz.feature_panels(image, [features], config.num_clusters, key)  # cosine K-means, as usual for DINO
        out = viz.save_png(output_dir / name, panel)
        print(f"{path} ({image.shape[0]}x{image.shape[1]}, {h}x{w} patches) -> {out}", flush=True)
    print(f"features: wrote {len(paths)} PNGs (image | PCA | K-means k={config.num_clusters}) to {output_dir}")
