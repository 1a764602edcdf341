"""A backbone's feature targets of a scene's views, computed once and cached per scene.

As the authors do: the image is resized *down* to a multiple of the backbone's patch size on each
side, the ViT's final-norm patch tokens (h, w, D) are the target, and the training step upsamples
them bilinearly to the full image resolution. The low-resolution tokens are what is cached
(float16), so a scene of hundreds of views costs megabytes rather than hundreds of gigabytes.
The forward runs in batches, on bfloat16 tensor cores by default (``dtype``; float32 residual
stream, as under torch.autocast).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.images import normalize, resize_to_patch_multiple
from fit3d_jax.models.dinov2 import FORWARD_COMPILER_OPTIONS, DinoV2
from fit3d_jax.prefetch import Prefetcher
from fit3d_jax.scenes import View, read_image
from fit3d_jax.weights import LoadedWeights

BATCH = 16


def _cache_key(weights: LoadedWeights, fingerprint: str, dtype) -> str:
    """The weights' content, the compute dtype and the scene's content (``scenes.verify_pixels``):
    images replaced in place change it."""
    return hashlib.sha256(json.dumps([weights.fingerprint, fingerprint, np.dtype(dtype).name]).encode()).hexdigest()[:16]


def compute_targets(views: list[View], weights: LoadedWeights, dtype=jnp.bfloat16) -> np.ndarray:
    """(V, h, w, D) float16 patch tokens of the views (all views of a scene share one size).

    Images are read and resized by background threads while the device runs, and the last batch
    is padded to the full batch size, so the model compiles once."""
    model = DinoV2(weights.config, dtype=dtype)
    extract = jax.jit(lambda params, x: model.apply({"params": params}, x).patch_tokens.astype(jnp.float16),
                      compiler_options=FORWARD_COMPILER_OPTIONS)
    patch, statistics = weights.config.patch_size, weights.config.input_statistics
    images = Prefetcher(lambda i: normalize(resize_to_patch_multiple(read_image(views[i]), patch_size=patch), statistics), 0,
                        len(views), depth=2 * BATCH)
    out = []
    try:
        for start in range(0, len(views), BATCH):
            count = min(BATCH, len(views) - start)
            batch = [images.next() for _ in range(count)]
            batch += batch[-1:] * (BATCH - count)  # the last batch repeats its last image
            out.append(extract(weights.params, np.stack(batch))[:count])  # stays on the device: no sync per batch
    finally:
        images.close()
    return np.concatenate([np.asarray(tokens) for tokens in out])


def cached_targets(cache_dir: Path, views: list[View], weights: LoadedWeights, fingerprint: str, dtype=jnp.bfloat16) -> np.ndarray:
    """Targets for ``views`` from ``cache_dir`` when present for these weights, dtype and scene
    content, else computed and written there. A damaged cache file is derived data: recomputed."""
    path = Path(cache_dir) / f"targets_{_cache_key(weights, fingerprint, dtype)}.npy"
    if path.exists():
        try:
            cached = np.load(path)
            if len(cached) == len(views):
                return cached
        except (OSError, ValueError, EOFError) as e:
            print(f"note: {path} is damaged ({e}); computing the targets again")
    targets = compute_targets(views, weights, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, targets)
    tmp.rename(path)  # atomic: a killed run never leaves a truncated cache
    return targets
