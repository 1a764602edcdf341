"""The public rendering API: :func:`rasterize` Gaussians with RGB (SH) and C-channel features."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from fit3d_jax import kernels
from fit3d_jax.render import chunked, ffi, reference
from fit3d_jax.render.camera import Camera

MAX_CHANNELS = 128  # kMaxChannels in ffi_kernels/include/fit3d/common.h: channels per kernel call
BACKENDS = ("auto", "ffi", "jax", "reference")


class RenderOutput(NamedTuple):
    rgb: jnp.ndarray  # (H, W, 3) colour composited over the background
    features: jnp.ndarray  # (H, W, C) blended features (no background)
    alpha: jnp.ndarray  # (H, W) 1 - final transmittance
    depth: jnp.ndarray  # (H, W) expected depth sum(w z) / alpha, 0 where alpha == 0
    radii: jnp.ndarray  # (N,) int32 3DGS screen radius (3 sigma, pixels), 0 when not visible
    visible: jnp.ndarray  # (N,) bool: in front of the camera, inside the view, may touch a pixel
    n_isect: jnp.ndarray  # () int32 tile intersections rendered (to size capacities)


def default_isect_capacity(num_gaussians: int) -> int:
    """Sorted-list entries kept for the backward (FFI) or binned at most (pure JAX, where more is
    an error)."""
    return max(8 * num_gaussians, 1 << 16)


def resolve_backend(backend: str) -> str:
    """'auto' -> 'ffi' where a kernel library exists for the default platform, else 'jax'.

    With 'ffi', every usable library is registered, so a computation placed on another
    platform (e.g. under ``jax.default_device(cpu)`` on a GPU machine) uses its own kernels.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("jax", "reference"):
        return backend
    platform = jax.default_backend()
    suffix = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda"}.get(platform)
    loaded = kernels.load_all()
    if suffix in loaded:
        return "ffi"
    if suffix is None:  # TPUs and other platforms: the pure-JAX rasterizer is the backend
        if backend == "ffi":
            raise ValueError(f"backend='ffi' has no kernels for platform {platform!r}; use 'jax'")
        return "jax"
    if backend == "ffi":
        kernels.load(suffix)  # raises KernelLibraryError with the build command
    warnings.warn(
        f"fit3d_jax: no {suffix} kernel library for this jaxlib; using the slower pure-JAX "
        f"rasterizer. Build it with: python -m fit3d_jax.kernels build{' --cuda' if suffix == 'cuda' else ''}",
        stacklevel=3,
    )
    return "jax"


def _check_inputs(means, scales, quats, opacities, sh, features, background, channel_chunk):
    n = means.shape[0]
    chex.assert_shape(means, (n, 3))
    chex.assert_shape(scales, (n, 3))
    chex.assert_shape(quats, (n, 4))
    chex.assert_shape(opacities, (n,))
    chex.assert_rank(sh, 3)
    chex.assert_shape(sh, (n, None, 3))
    chex.assert_rank(features, 2)
    chex.assert_shape(features, (n, None))
    chex.assert_shape(background, (3,))
    if sh.shape[1] not in (1, 4, 9, 16):
        raise ValueError(f"sh must have 1, 4, 9 or 16 coefficients per Gaussian (degree 0..3), got {sh.shape[1]}")
    if features.shape[1] < 1:
        raise ValueError("features must have at least one channel")
    if not 1 <= channel_chunk <= MAX_CHANNELS:
        raise ValueError(f"channel_chunk must be in 1..{MAX_CHANNELS}, got {channel_chunk}")
    if n == 0:
        raise ValueError("rasterize needs at least one Gaussian")
    for name, x in dict(means=means, scales=scales, quats=quats, opacities=opacities, sh=sh, features=features).items():
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating-point array, got {x.dtype}")


def rasterize(
    means: jnp.ndarray,
    scales: jnp.ndarray,
    quats: jnp.ndarray,
    opacities: jnp.ndarray,
    sh: jnp.ndarray,
    features: jnp.ndarray,
    camera: Camera,
    background: jnp.ndarray | None = None,
    *,
    sh_degree: int | jnp.ndarray | None = None,
    screen_offset: jnp.ndarray | None = None,
    feature_geometry: bool = False,
    backend: str = "auto",
    isect_capacity: int | None = None,
    tile_batches: int = 1,
    channel_chunk: int = MAX_CHANNELS,
) -> RenderOutput:
    """Renders Gaussians into RGB, C feature channels, alpha and expected depth.

    Args:
      means, scales, quats, opacities: (floating, computed in float32) (N,3) world means, (N,3) positive scales, (N,4) rotations
        (w, x, y, z; normalised inside), (N,) opacities in [0, 1]. Activations (exp, sigmoid) are
        the caller's business.
      sh: (N, K, 3) SH coefficients, K = (degree + 1)^2 for degree 0..3.
      features: (N, C) per-Gaussian features, any C >= 1: rendered ``channel_chunk`` channels
        per rasterizer call (the kernels take at most 128), each chunk sharing the projection.
      camera: a :class:`Camera`; ``jax.vmap`` over a batched camera renders several views.
      background: (3,) RGB behind the Gaussians (default black). Features have no background.
      sh_degree: active SH degree (a traced int is fine: no retrace as it grows); default all.
      screen_offset: optional (N, 2) zeros added to the projected means; its gradient is
        dL/d(means2d) in pixels, the view-space gradient of 3DGS densification.
      feature_geometry: if True, feature-image gradients also reach means, scales, rotations
        and opacities. Default False: they reach the features only (FiT3D's routing).
      backend: 'auto' (CUDA/CPU kernels where built, else pure JAX), 'ffi', 'jax' (tiled and
        chunked, :mod:`.chunked`: the TPU path) or 'reference' (dense: every Gaussian against
        every pixel; tests, tiny scenes).
      isect_capacity: tile intersections (Gaussian, 16x16 tile). FFI: sorted-list entries kept
        for the backward (more are re-binned in the backward, never dropped). JAX: how many are
        binned at most; more is an error naming this argument and the images are NaN. Default
        :func:`default_isect_capacity`; ``out.n_isect`` tells what a scene needs.
      tile_batches: JAX backend only: tiles, sorted by list length, are blended in this many
        groups one after the other, each stopping at its own longest list (1: all in lock-step).
      channel_chunk: feature channels per rasterizer call (1..128). RGB, alpha and depth come
        from the first call; the others add only their features (and, with
        ``feature_geometry``, their share of the geometry gradients), so splitting never changes
        the result.

    Non-finite means, scales, rotations, opacities or SH coefficients of any Gaussian raise an
    error from the kernels; a non-finite feature value propagates (as NaN/Inf) into the pixels
    it contributes to.
    """
    means, scales, quats, opacities, sh, features = map(jnp.asarray, (means, scales, quats, opacities, sh, features))
    n = means.shape[0]
    if background is None:
        background = jnp.zeros(3, jnp.float32)
    background = jnp.asarray(background, jnp.float32)
    _check_inputs(means, scales, quats, opacities, sh, features, background, channel_chunk)
    # The kernels compute in float32; gradients flow back to the callers' dtypes.
    means, scales, quats, opacities, sh, features = (
        x.astype(jnp.float32) for x in (means, scales, quats, opacities, sh, features)
    )
    max_degree = int(round(sh.shape[1] ** 0.5)) - 1
    sh_degree = jnp.asarray(max_degree if sh_degree is None else sh_degree, jnp.int32)
    isect_capacity = default_isect_capacity(n) if isect_capacity is None else int(isect_capacity)
    width, height = camera.width, camera.height

    backend = resolve_backend(backend)
    if backend == "ffi":
        proj = ffi.project(means, scales, quats, opacities, sh, sh_degree, camera.pack(), width, height)
    else:
        proj = reference.project(means, scales, quats, opacities, sh, sh_degree, camera)
    means2d = proj.means2d if screen_offset is None else proj.means2d + screen_offset

    def raster(chunk):
        args = (means2d, proj.conics, opacities, proj.colors, proj.depths, chunk, proj.extents, width, height)
        if backend == "ffi":
            return ffi.rasterize(*args, isect_capacity, bool(feature_geometry))
        if backend == "jax":
            return chunked.rasterize(*args, bool(feature_geometry), isect_capacity, int(tile_batches))
        return reference.rasterize_dense(*args, bool(feature_geometry)), jnp.asarray(-1, jnp.int32)  # the dense reference does not bin

    parts = [raster(features[:, i:i + channel_chunk]) for i in range(0, features.shape[1], channel_chunk)]
    first, n_isect = parts[0]
    if len(parts) > 1:
        first = first._replace(features=jnp.concatenate([p[0].features for p in parts], axis=-1))
    return compose_output(first, proj.radii, background, n_isect)


def compose_output(raster: reference.Raster, radii: jnp.ndarray, background: jnp.ndarray, n_isect: jnp.ndarray) -> RenderOutput:
    """Background, alpha and expected depth from the rasterizer's accumulated sums."""
    alpha = 1.0 - raster.trans
    safe_alpha = jnp.where(alpha == 0, 1.0, alpha)  # (alpha >= 0; a NaN stays NaN)
    return RenderOutput(
        rgb=raster.rgb + raster.trans[..., None] * background,
        features=raster.features,
        alpha=alpha,
        depth=jnp.where(alpha == 0, 0.0, raster.depth / safe_alpha),
        radii=radii,
        visible=radii > 0,
        n_isect=n_isect,
    )
