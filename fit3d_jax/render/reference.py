"""Pure-JAX Gaussian rendering: the plain reference of the kernels, and the projection of the
pure-JAX backend.

It computes exactly the function of ``ffi_kernels/`` (same culling, binning boxes, thresholds,
front-to-back acceptance and depth order with ties broken by index) with dense array
operations instead of per-pixel loops:

* :func:`project` mirrors ``projection.h`` / ``sh.h`` (EWA projection, SH colour); the
  ``backend="jax"`` path (:mod:`.chunked`, the TPU path) uses it too.
* :func:`rasterize_dense` blends every Gaussian into every pixel (memory O(pixels x N)); it is
  what the tests compare the kernels and the chunked rasterizer against.

Gradients come from JAX autodiff; feature gradients reach only the features unless
``feature_geometry`` is set, like the kernels.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.render.camera import Camera

TILE = 16
ALPHA_MIN = np.float32(1.0) / np.float32(255.0)
ALPHA_MAX = np.float32(0.99)
TRANSMITTANCE_MIN = np.float32(1e-4)
DILATION = np.float32(0.3)
FRUSTUM_SLACK = np.float32(0.3)

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


# Plain float32 matrix products everywhere: XLA's default on GPUs would use TF32.
_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


class Projection(NamedTuple):
    means2d: jnp.ndarray  # (N, 2)
    conics: jnp.ndarray  # (N, 3)
    depths: jnp.ndarray  # (N,)
    colors: jnp.ndarray  # (N, 3)
    extents: jnp.ndarray  # (N, 2), 0 when culled
    radii: jnp.ndarray  # (N,) int32, 0 when culled


class Raster(NamedTuple):
    """Accumulated sums of the rasterizer (background, alpha and depth normalisation are the
    public API's business)."""

    rgb: jnp.ndarray  # (H, W, 3) sum_i w_i colour_i
    features: jnp.ndarray  # (H, W, C) sum_i w_i feature_i
    depth: jnp.ndarray  # (H, W) sum_i w_i depth_i
    trans: jnp.ndarray  # (H, W) final transmittance


def quat_to_rotmat(q: jnp.ndarray) -> jnp.ndarray:
    """(..., 4) quaternions (w, x, y, z), any norm -> (..., 3, 3) rotations."""
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = jnp.moveaxis(q, -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(r, -1) for r in rows], -2)


def sh_basis(dirs: jnp.ndarray) -> jnp.ndarray:
    """(N, 3) unit directions -> (N, 16) real SH basis values of degrees 0..3 (3DGS constants)."""
    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    xx, yy, zz = x * x, y * y, z * z
    return jnp.stack(
        [
            jnp.full_like(x, SH_C0),
            -SH_C1 * y,
            SH_C1 * z,
            -SH_C1 * x,
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ],
        axis=-1,
    )


def sh_to_color(sh: jnp.ndarray, sh_degree, means: jnp.ndarray, cam_pos: jnp.ndarray) -> jnp.ndarray:
    """colour = max(sum_k b_k sh_k + 0.5, 0) over the active degree (<= what K allows)."""
    num_coeffs = sh.shape[1]
    max_degree = int(round(num_coeffs**0.5)) - 1
    degree = jnp.clip(jnp.asarray(sh_degree, jnp.int32), 0, max_degree)
    v = means - cam_pos
    basis = sh_basis(v / jnp.linalg.norm(v, axis=-1, keepdims=True))[:, :num_coeffs]
    active = jnp.arange(num_coeffs) < (degree + 1) ** 2
    basis = jnp.where(active, basis, 0.0)
    return jnp.maximum(jnp.einsum("nk,nkc->nc", basis, sh, precision="highest") + 0.5, 0.0)


def pixel_rect(means2d: jnp.ndarray, extents: jnp.ndarray, width: int, height: int):
    """Inclusive pixel ranges (x0, x1, y0, y1) of each binning box and whether it covers any
    pixel; pixel j's centre is j + 0.5. Mirrors pixel_rect() of projection.h."""
    lo = jnp.ceil(means2d - extents - 0.5)
    hi = jnp.floor(means2d + extents - 0.5)
    limit = jnp.array([width - 1, height - 1], jnp.float32)
    hit = jnp.all((extents > 0) & (lo <= hi) & (hi >= 0) & (lo <= limit), axis=-1)
    lo = jnp.maximum(lo, 0).astype(jnp.int32)
    hi = jnp.minimum(hi, limit).astype(jnp.int32)
    return lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1], hit


def project(
    means: jnp.ndarray,
    scales: jnp.ndarray,
    quats: jnp.ndarray,
    opacities: jnp.ndarray,
    sh: jnp.ndarray,
    sh_degree,
    camera: Camera,
) -> Projection:
    """EWA projection and SH colour of every Gaussian (see projection.h for the rules)."""
    f32 = jnp.float32
    rot = camera.viewmat[:3, :3]
    p = _matmul(means, rot.T) + camera.viewmat[:3, 3]
    z = p[:, 2]
    in_depth = (z >= camera.near) & (z <= camera.far)
    z_safe = jnp.where(in_depth, z, 1.0)  # keeps culled rows finite for autodiff

    m = quat_to_rotmat(quats) * scales[:, None, :]
    cov = _matmul(m, jnp.swapaxes(m, 1, 2))
    cov_cam = _matmul(_matmul(rot, cov), rot.T)

    width, height = f32(camera.width), f32(camera.height)
    tan_x, tan_y = 0.5 * width / camera.fx, 0.5 * height / camera.fy
    u, v = p[:, 0] / z_safe, p[:, 1] / z_safe
    uc = jnp.clip(u, -(camera.cx / camera.fx + FRUSTUM_SLACK * tan_x), (width - camera.cx) / camera.fx + FRUSTUM_SLACK * tan_x)
    vc = jnp.clip(v, -(camera.cy / camera.fy + FRUSTUM_SLACK * tan_y), (height - camera.cy) / camera.fy + FRUSTUM_SLACK * tan_y)
    zeros = jnp.zeros_like(z)
    jac = jnp.stack(
        [
            jnp.stack([camera.fx / z_safe, zeros, -camera.fx * uc / z_safe], -1),
            jnp.stack([zeros, camera.fy / z_safe, -camera.fy * vc / z_safe], -1),
        ],
        -2,
    )
    cov2d = _matmul(_matmul(jac, cov_cam), jnp.swapaxes(jac, 1, 2))
    a, b, c = cov2d[:, 0, 0] + DILATION, cov2d[:, 0, 1], cov2d[:, 1, 1] + DILATION
    det = a * c - b * b
    visible = in_depth & (det > 0) & (opacities >= ALPHA_MIN)
    det_safe = jnp.where(visible, det, 1.0)
    conics = jnp.stack([c / det_safe, -b / det_safe, a / det_safe], -1)
    means2d = jnp.stack([camera.fx * p[:, 0] / z_safe + camera.cx, camera.fy * p[:, 1] / z_safe + camera.cy], -1)
    level = jnp.log(jnp.where(visible, opacities, 1.0) / ALPHA_MIN)
    extents = jnp.sqrt(jnp.maximum(jnp.stack([2.0 * level * a, 2.0 * level * c], -1), 0.0))
    extents = jnp.where(visible[:, None], extents, 0.0)
    visible &= pixel_rect(means2d, extents, camera.width, camera.height)[4]
    mid = 0.5 * (a + c)
    lam = mid + jnp.sqrt(jnp.maximum(0.1, mid * mid - det))
    radii = jnp.where(visible, jnp.ceil(3.0 * jnp.sqrt(jnp.maximum(lam, 0.0))), 0).astype(jnp.int32)

    cam_pos = -_matmul(rot.T, camera.viewmat[:3, 3])
    colors = sh_to_color(sh, sh_degree, means, cam_pos)
    vis = visible[:, None]
    return Projection(
        means2d=jnp.where(vis, means2d, 0.0),
        conics=jnp.where(vis, conics, 0.0),
        depths=jnp.where(visible, z, 0.0),
        colors=jnp.where(vis, colors, 0.0),
        extents=jnp.where(vis, extents, 0.0),
        radii=radii,
    )


def _composite(pix_x, pix_y, cand, means2d, conics, opacities, colors, depths, features, boxes, feature_geometry):
    """Blends candidates ``cand`` (K,) (front to back, -1 = none) into pixels (P,).

    Returns rgb (P,3), features (P,C), depth (P,), trans (P,).
    """
    valid = cand >= 0
    g = jnp.maximum(cand, 0)
    x0, x1, y0, y1 = (b[g] for b in boxes)
    inbox = (pix_x[:, None] >= x0) & (pix_x[:, None] <= x1) & (pix_y[:, None] >= y0) & (pix_y[:, None] <= y1)
    mean, conic = means2d[g], conics[g]
    dx = mean[None, :, 0] - (pix_x.astype(jnp.float32) + 0.5)[:, None]
    dy = mean[None, :, 1] - (pix_y.astype(jnp.float32) + 0.5)[:, None]
    sigma = 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy
    alpha = jnp.minimum(ALPHA_MAX, opacities[g] * jnp.exp(-sigma))
    keep = valid & inbox & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = jnp.where(keep, alpha, 0.0)
    # Front to back: a contribution is accepted while the transmittance after it stays >= 1e-4.
    # Transmittance only decreases, so the accepted ones are exactly those before the first
    # rejection, as in the sequential loop of the kernels.
    accepted = keep & (jnp.cumprod(1.0 - alpha, axis=1) >= TRANSMITTANCE_MIN)
    alpha = jnp.where(accepted, alpha, 0.0)
    t_after = jnp.cumprod(1.0 - alpha, axis=1)
    t_before = jnp.concatenate([jnp.ones_like(t_after[:, :1]), t_after[:, :-1]], axis=1)
    w = alpha * t_before
    hi = jax.lax.Precision.HIGHEST
    w_feat = w if feature_geometry else jax.lax.stop_gradient(w)
    return (
        jnp.dot(w, colors[g], precision=hi),
        jnp.dot(w_feat, features[g], precision=hi),
        jnp.dot(w, depths[g], precision=hi),
        t_after[:, -1],
    )


def rasterize_dense(
    means2d, conics, opacities, colors, depths, features, extents, width: int, height: int, feature_geometry: bool = False
) -> Raster:
    """Every Gaussian against every pixel, depth-sorted (stable, so ties go by index)."""
    order = jnp.argsort(depths, stable=True)
    boxes = pixel_rect(means2d, extents, width, height)
    boxes = tuple(jnp.where(boxes[4], b, -1) for b in boxes[:4])  # empty boxes never match
    ys, xs = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    rgb, feat, depth, trans = _composite(
        xs.reshape(-1), ys.reshape(-1), order, means2d, conics, opacities, colors, depths, features, boxes, feature_geometry
    )
    c = features.shape[1]
    return Raster(rgb.reshape(height, width, 3), feat.reshape(height, width, c), depth.reshape(height, width), trans.reshape(height, width))
