"""Job ``features``: PNGs of DINOv2 patch features, image | PCA-RGB | K-means, per image."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from fit3d_jax import images, viz
from fit3d_jax.errors import ConfigError
from fit3d_jax.jobs.weights_fields import compute_dtype, load_configured_weights
from fit3d_jax.models.dinov2 import FORWARD_COMPILER_OPTIONS, DinoV2


def _check(config: ml_collections.ConfigDict) -> list[Path]:
    if config.num_clusters < 1:
        raise ConfigError(f"config.num_clusters={config.num_clusters} must be at least 1")
    if config.short_side < 0:
        raise ConfigError(f"config.short_side={config.short_side} must be >= 0 (0 keeps the image size)")
    compute_dtype(config)  # checked before any work
    if not config.image_dir:
        return images.demo_images()
    try:
        return images.list_images(config.image_dir)
    except images.ImageError as e:
        raise ConfigError(f"config.image_dir: {e}") from None


def run(config: ml_collections.ConfigDict) -> None:
    paths = _check(config)
    weights = load_configured_weights(config)
    model = DinoV2(weights.config, dtype=compute_dtype(config))
    patch_size = weights.config.patch_size
    extract = jax.jit(lambda params, x: model.apply({"params": params}, x).patch_tokens, compiler_options=FORWARD_COMPILER_OPTIONS)
    key = jax.random.key(config.seed)
    output_dir = Path(config.output_dir)
    for path in paths:
        try:
            image = images.resize_to_patch_multiple(
                images.load_image(path), patch_size=patch_size, short_side=config.short_side or None
            )
        except images.ImageError as e:
            raise ConfigError(f"config.image_dir: {e}") from None
        features = extract(weights.params, images.normalize(image, weights.config.input_statistics)[None])[0]
        h, w, dim = features.shape
        if config.num_clusters > h * w:
            raise ConfigError(f"config.num_clusters={config.num_clusters} exceeds the {h}x{w} patches of {path}")
        panel = viz.feature_panels(image, [features], config.num_clusters, key)  # cosine K-means, as usual for DINO
        out = viz.save_png(output_dir / f"{path.stem}.png", panel)
        print(f"{path} ({image.shape[0]}x{image.shape[1]}, {h}x{w} patches) -> {out}", flush=True)
    print(f"features: wrote {len(paths)} PNGs (image | PCA | K-means k={config.num_clusters}) to {output_dir.absolute()}")
