"""Feature visualisation: PCA to RGB, K-means clustering (JAX), side-by-side PNG panels."""

from __future__ import annotations

import colorsys
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import chex
import cv2
import jax
import jax.numpy as jnp
import numpy as np

_HIGHEST = jax.lax.Precision.HIGHEST


@jax.jit
def pca_rgb(features: jax.Array) -> jax.Array:
    """(..., D) features -> (..., 3) colours in [0, 1].

    Projection on the three leading principal components; each is sign-fixed (positive skew,
    so colours do not flip between runs) and stretched between its 1st and 99th percentile.
    """
    flat = features.reshape(-1, features.shape[-1]).astype(jnp.float32)
    centered = flat - flat.mean(axis=0)
    _, vectors = jnp.linalg.eigh(jnp.matmul(centered.T, centered, precision=_HIGHEST))
    proj = jnp.matmul(centered, vectors[:, ::-1][:, :3], precision=_HIGHEST)  # eigh sorts ascending
    proj = proj * jnp.where(jnp.sum(proj**3, axis=0) < 0, -1.0, 1.0)
    lo, hi = jnp.percentile(proj, 1, axis=0), jnp.percentile(proj, 99, axis=0)
    rgb = jnp.clip((proj - lo) / jnp.maximum(hi - lo, 1e-12), 0.0, 1.0)
    return rgb.reshape(*features.shape[:-1], 3)


def _sq_distances(points: jax.Array, centroids: jax.Array) -> jax.Array:
    """(N, k) squared distances, without materialising (N, k, D)."""
    cross = jnp.matmul(points, centroids.T, precision=_HIGHEST)
    return jnp.sum(points**2, -1)[:, None] - 2 * cross + jnp.sum(centroids**2, -1)[None, :]


@functools.partial(jax.jit, static_argnames=("k", "iterations"))
def kmeans(points: jax.Array, k: int, key: jax.Array, iterations: int = 50) -> tuple[jax.Array, jax.Array]:
    """Lloyd's K-means with k-means++ seeding: points (N, D) -> labels (N,), centroids (k, D).

    Runs a fixed number of iterations (jittable); an emptied cluster keeps its centroid.
    """
    chex.assert_rank(points, 2)
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of points ({n})")
    points = points.astype(jnp.float32)
    keys = jax.random.split(key, k)

    def seed(i, state):
        centroids, d2 = state
        # Next seed drawn with probability proportional to the squared distance (uniform if all 0).
        idx = jax.random.categorical(keys[i], jnp.log(jnp.maximum(d2, 1e-30)))
        centroids = centroids.at[i].set(points[idx])
        return centroids, jnp.minimum(d2, jnp.sum((points - points[idx]) ** 2, -1))

    first = points[jax.random.randint(keys[0], (), 0, n)]
    init = (jnp.zeros((k, points.shape[1])).at[0].set(first), jnp.sum((points - first) ** 2, -1))
    centroids, _ = jax.lax.fori_loop(1, k, seed, init)

    def lloyd(_, centroids):
        onehot = jax.nn.one_hot(jnp.argmin(_sq_distances(points, centroids), -1), k)
        counts = onehot.sum(0)[:, None]
        means = jnp.matmul(onehot.T, points, precision=_HIGHEST) / jnp.maximum(counts, 1)
        return jnp.where(counts > 0, means, centroids)

    centroids = jax.lax.fori_loop(0, iterations, lloyd, centroids)
    return jnp.argmin(_sq_distances(points, centroids), -1), centroids


def palette(k: int) -> np.ndarray:
    """(k, 3) uint8 well-separated colours (golden-ratio hue steps)."""
    hues = (np.arange(k) * 0.618033988749895) % 1.0
    colours = np.array([colorsys.hsv_to_rgb(h, 0.7, 0.95) for h in hues]).reshape(k, 3)
    return (colours * 255).round().astype(np.uint8)


def to_uint8(rgb: np.ndarray | jax.Array) -> np.ndarray:
    """[0, 1] floats -> uint8."""
    return (np.clip(np.asarray(rgb, np.float32), 0, 1) * 255).round().astype(np.uint8)


def upsample_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) -> (H, W, C) by nearest neighbour (keeps patch boundaries visible)."""
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def side_by_side(panels: Sequence[np.ndarray], gap: int = 8) -> np.ndarray:
    """Concatenates equally tall (H, W_i, 3) uint8 panels left to right, white gaps between."""
    height = panels[0].shape[0]
    if any(p.shape[0] != height or p.shape[2:] != (3,) or p.dtype != np.uint8 for p in panels):
        raise ValueError(f"panels must be uint8 (H, W, 3) of one height; got {[(p.shape, p.dtype) for p in panels]}")
    spacer = np.full((height, gap, 3), 255, np.uint8)
    row = [piece for p in panels for piece in (p, spacer)][:-1]
    return np.concatenate(row, axis=1)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write PNG")
    return path


def feature_panels(image: np.ndarray, feature_maps: Sequence[jax.Array], num_clusters: int, key: jax.Array) -> np.ndarray:
    """image | PCA of each (h, w, D) feature map | cosine K-means of each, side by side. The maps
    (one image's, e.g. the original and the fine-tuned model's) share one PCA basis, so equal
    features get equal colours and a colour change is a feature change."""
    w = feature_maps[0].shape[1]
    shared = np.asarray(pca_rgb(jnp.concatenate([jnp.asarray(f) for f in feature_maps], axis=1)))
    pca, clusters = [], []
    for k, features in enumerate(feature_maps):
        h, _, dim = features.shape
        flat = features.reshape(-1, dim)
        labels, _ = kmeans(flat / jnp.linalg.norm(flat, axis=-1, keepdims=True), num_clusters, key)
        pca.append(upsample_nearest(to_uint8(shared[:, k * w:(k + 1) * w]), image.shape[:2]))
        clusters.append(upsample_nearest(palette(num_clusters)[np.asarray(labels).reshape(h, w)], image.shape[:2]))
    return side_by_side([image, *pca, *clusters])
