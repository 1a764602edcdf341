"""Rendered feature targets for stage II, as the authors make them: render the scene's 64-channel
feature image at full resolution (no gradients), decode it with the scene's convolution, resize
it bilinearly down to the ViT's token grid.

Scenes move to a device on first use and stay there in a least-recently-used cache with a byte
budget, padded to power-of-two sizes (free slots have opacity 0) so that few shapes compile and a
device's views of same-sized scenes render as one batch.
"""

from __future__ import annotations

import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fit3d_jax.finetune.store import StoredScene, StoredView
from fit3d_jax.render import Camera, rasterize
from fit3d_jax.render.decode import decode
from fit3d_jax.render.rasterize import resolve_backend


@struct.dataclass
class DeviceScene:
    means: jnp.ndarray
    scales: jnp.ndarray
    quats: jnp.ndarray
    opacities: jnp.ndarray  # 0 in padding slots
    features: jnp.ndarray
    decoder: jnp.ndarray  # (3, 3, F, D)


def padded_size(n: int) -> int:
    return 1 << max(12, math.ceil(math.log2(max(n, 1))))


def pad_scene(scene: StoredScene) -> dict[str, np.ndarray]:
    size = padded_size(scene.num_gaussians)

    def pad(x, fill=0.0):
        out = np.full((size,) + x.shape[1:], fill, np.float32)
        out[: len(x)] = x
        return out

    quats = pad(scene.quats)
    quats[scene.num_gaussians :, 0] = 1.0
    return dict(
        means=pad(scene.means), scales=pad(scene.scales, 1e-3), quats=quats, opacities=pad(scene.opacities),
        features=pad(scene.features), decoder=scene.decoder,
    )


class SceneCache:
    """Device copies of scenes, evicting the least recently used beyond ``budget_bytes``."""

    def __init__(self, scenes: list[StoredScene], device, budget_bytes: float):
        self.scenes, self.device, self.budget = scenes, device, budget_bytes
        self.cached: collections.OrderedDict[int, DeviceScene] = collections.OrderedDict()
        self.bytes = 0
        self.transfers = 0

    def get(self, index: int) -> DeviceScene:
        if index in self.cached:
            self.cached.move_to_end(index)
            return self.cached[index]
        host = pad_scene(self.scenes[index])
        size = sum(x.nbytes for x in host.values())
        while self.cached and self.bytes + size > self.budget:
            _, evicted = self.cached.popitem(last=False)
            self.bytes -= sum(x.nbytes for x in jax.tree.leaves(evicted))
        scene = DeviceScene(**jax.device_put(host, self.device))  # asynchronous
        self.cached[index] = scene
        self.bytes += size
        self.transfers += 1
        return scene


GEOMETRY = ("means", "scales", "quats", "opacities", "features")  # what the rasterizer reads of a scene


def _render_features(geometry: dict, viewmat, intrinsics, width: int, height: int, backend: str) -> jnp.ndarray:
    """(H, W, F) rendered feature image of one view (no gradients are taken)."""
    camera = Camera.from_intrinsics(viewmat, intrinsics, width, height)
    sh = jnp.zeros((geometry["means"].shape[0], 1, 3), jnp.float32)  # colours are not needed
    return rasterize(*(geometry[k] for k in GEOMETRY[:4]), sh, geometry["features"], camera, backend=backend).features


def _tokens(features: jnp.ndarray, decoder: jnp.ndarray, flip, grid: tuple[int, int]) -> jnp.ndarray:
    decoded = decode(features, decoder)
    tokens = jax.image.resize(decoded, (*grid, decoded.shape[-1]), "bilinear", antialias=False)
    return jnp.where(flip, tokens[:, ::-1], tokens)


def render_target(scene: DeviceScene, viewmat, intrinsics, flip, width: int, height: int, grid: tuple[int, int],
                  backend: str = "auto") -> jnp.ndarray:
    """(h, w, D) target tokens of one view; ``flip`` mirrors it horizontally (with its image)."""
    geometry = {k: getattr(scene, k) for k in GEOMETRY}
    return _tokens(_render_features(geometry, viewmat, intrinsics, width, height, backend), scene.decoder, flip, grid)


@functools.partial(jax.jit, static_argnames=("width", "height", "grid", "backend"))
def render_targets(scenes: tuple[DeviceScene, ...], viewmats, intrinsics, flips, width: int, height: int,
                   grid: tuple[int, int], backend: str = "auto") -> jnp.ndarray:
    """(k, h, w, D) targets of k views, one scene each (scenes of one padded size; a scene may
    repeat), in one program. On the kernels the views render as one batch, ``jax.vmap`` over
    them: each rasterizer stage is one call for all views with one binning sync. The pure-JAX
    rasterizer renders them one after another instead: under vmap its sorts, searches and gathers
    become batched ones, which XLA runs 1.5-4.5x slower (CPU, 2026-12-03), 1.9x slower per view
    at 8 views on an H200 (experiments/bench_stage2_render.py). Each view is decoded by its own
    scene's convolution: under vmap, distinct kernels would become one grouped convolution, which
    XLA runs several times slower than k plain ones."""
    geometry = [{k: getattr(s, k) for k in GEOMETRY} for s in scenes]
    if resolve_backend(backend) == "ffi":
        stacked = {k: jnp.stack([g[k] for g in geometry]) for k in GEOMETRY}
        features = jax.vmap(_render_features, (0, 0, 0, None, None, None))(stacked, viewmats, intrinsics, width, height, backend)
    else:
        features = [_render_features(g, viewmats[i], intrinsics[i], width, height, backend) for i, g in enumerate(geometry)]
    return jnp.stack([_tokens(features[i], s.decoder, flips[i], grid) for i, s in enumerate(scenes)])


def render_samples(cache: SceneCache, samples, size: tuple[int, int], grid: tuple[int, int], backend: str = "auto") -> jnp.ndarray:
    """(k, h, w, D) targets of the samples (``data.Sample``s) at full size (H, W), in their order:
    one :func:`render_targets` program per padded scene size among them."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(padded_size(cache.scenes[s.scene].num_gaussians), []).append(i)
    rendered = []
    for group in groups.values():
        picked = [samples[i] for i in group]
        cameras = [view_camera(cache.scenes[s.scene].views[s.view]) for s in picked]
        rendered.append(render_targets(
            tuple(cache.get(s.scene) for s in picked), np.stack([c[0] for c in cameras]), np.stack([c[1] for c in cameras]),
            np.array([s.flip for s in picked]), size[1], size[0], grid, backend))
    if len(rendered) == 1:
        return rendered[0]
    return jnp.concatenate(rendered)[np.argsort(np.concatenate(list(groups.values())))]


def view_camera(view: StoredView) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(view.world_to_camera, np.float32), np.asarray(view.intrinsics, np.float32)
