"""Random Gaussian scenes in front of a camera, for tests, checks and benchmarks.

The default recipe is the one of the rasterizer benchmark (experiments/bench_rasterizer.py):
camera at the origin looking down +z; depth z ~ U(z_min, z_max); x = u z (W/2)/fx * spread,
y = v z (H/2)/fy * spread with u, v ~ U(-1, 1); scales exp(normal(log scale, 0.5)); unit
quaternions from normalised Gaussian 4-vectors; opacity sigmoid(normal(0, 1)); SH coefficients
normal(0, 0.3); features normal(0, 1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fit3d_jax.render.camera import Camera


class Scene(NamedTuple):
    means: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    opacities: np.ndarray
    sh: np.ndarray
    features: np.ndarray

    def astype(self, dtype) -> Scene:
        return Scene(*(x.astype(dtype) for x in self))


def front_camera(width: int, height: int, focal: float | None = None) -> Camera:
    """Identity world-to-camera, principal point at the image centre."""
    focal = 0.5 * width if focal is None else focal
    return Camera.create(np.eye(4), focal, focal, width / 2, height / 2, width, height)


def random_scene(
    n: int,
    camera: Camera,
    *,
    channels: int = 64,
    sh_coeffs: int = 16,
    seed: int = 0,
    z_range: tuple[float, float] = (0.5, 6.0),
    spread: float = 1.1,
    scale: float = 0.01,
) -> Scene:
    """float32 Gaussians spread over (spread x) the view frustum of an identity-pose camera."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(*z_range, n)
    fx, fy = float(camera.fx), float(camera.fy)
    x = rng.uniform(-1, 1, n) * z * (camera.width / 2) / fx * spread
    y = rng.uniform(-1, 1, n) * z * (camera.height / 2) / fy * spread
    quats = rng.normal(size=(n, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    return Scene(
        means=np.stack([x, y, z], -1),
        scales=np.exp(rng.normal(np.log(scale), 0.5, (n, 3))),
        quats=quats,
        opacities=1.0 / (1.0 + np.exp(-rng.normal(size=n))),
        sh=rng.normal(0.0, 0.3, (n, sh_coeffs, 3)),
        features=rng.normal(size=(n, channels)),
    ).astype(np.float32)
