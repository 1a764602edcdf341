"""Rendered feature targets for stage II, as the authors make them: render the scene's 64-channel
feature image at full resolution (no gradients), decode it with the scene's convolution, resize
it bilinearly down to the ViT's token grid.

Scenes move to a device on first use and stay there in a least-recently-used cache with a byte
budget, padded to power-of-two sizes (free slots have opacity 0) so that few shapes compile.
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
from fit3d_jax.render import Camera
from fit3d_jax.render.decode import render_and_decode


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


@functools.partial(jax.jit, static_argnames=("width", "height", "grid"))
def render_target(scene: DeviceScene, viewmat, intrinsics, flip, width: int, height: int, grid: tuple[int, int]) -> jnp.ndarray:
    """(h, w, D) target tokens of one view; ``flip`` mirrors it horizontally (with its image)."""
    fx, fy, cx, cy = (intrinsics[k] for k in range(4))
    camera = Camera(viewmat, fx, fy, cx, cy, jnp.float32(0.01), jnp.float32(1e10), width, height)
    sh = jnp.zeros((scene.means.shape[0], 1, 3), jnp.float32)  # colours are not needed
    _, decoded = render_and_decode(scene.means, scene.scales, scene.quats, scene.opacities, sh, scene.features, scene.decoder,
                                   camera)
    tokens = jax.image.resize(decoded, (*grid, decoded.shape[-1]), "bilinear", antialias=False)
    return jnp.where(flip, tokens[:, ::-1], tokens)


def view_camera(view: StoredView) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(view.world_to_camera, np.float32), np.asarray(view.intrinsics, np.float32)
