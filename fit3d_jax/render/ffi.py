"""Thin JAX wrappers over the FFI kernels: one custom_vjp per stage (projection, rasterization),
each calling its forward and hand-written backward custom call. Under ``jax.vmap`` (over cameras,
say) each stage is one call for the whole batch: the kernels take the views as a grid dimension
and bin them in one sort, with one host synchronisation per call instead of one per view.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax import kernels
from fit3d_jax.render.reference import Projection, Raster

_f32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.float32)
_i32 = functools.partial(jax.ShapeDtypeStruct, dtype=jnp.int32)
_call = functools.partial(kernels.call, vmap_method="expand_dims")  # the handlers take the batch


def _size_attrs(width: int, height: int) -> dict:
    return {"width": np.int32(width), "height": np.int32(height)}


# ----------------------------------------------------------------------------- projection


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def project(means, scales, quats, opacities, sh, sh_degree, cam_params, width: int, height: int) -> Projection:
    n = means.shape[0]
    out = (_f32((n, 2)), _f32((n, 3)), _f32((n,)), _f32((n, 3)), _f32((n, 2)), _i32((n,)))
    return Projection(*_call("project_forward", out, means, scales, quats, opacities, sh, sh_degree, cam_params, **_size_attrs(width, height)))


def _project_fwd(means, scales, quats, opacities, sh, sh_degree, cam_params, width, height):
    out = project(means, scales, quats, opacities, sh, sh_degree, cam_params, width, height)
    return out, (means, scales, quats, opacities, sh, sh_degree, cam_params)


def _project_bwd(width, height, res, cot: Projection):
    means, scales, quats, opacities, sh, sh_degree, cam_params = res
    out = (_f32(means.shape), _f32(scales.shape), _f32(quats.shape), _f32(sh.shape))
    d_means, d_scales, d_quats, d_sh = _call(
        "project_backward", out, *res, cot.means2d, cot.conics, cot.depths, cot.colors, **_size_attrs(width, height)
    )
    # Opacity only sets the binning extent (not differentiable); no gradients for the camera.
    return d_means, d_scales, d_quats, jnp.zeros_like(opacities), d_sh, None, None


project.defvjp(_project_fwd, _project_bwd)


# ----------------------------------------------------------------------------- rasterization


def _raster_call(means2d, conics, opacities, colors, depths, features, extents, width, height, capacity):
    n_tiles = (-(-width // 16)) * (-(-height // 16))
    c = features.shape[1]
    out = (
        _f32((height, width, 3)),
        _f32((height, width, c)),
        _f32((height, width)),
        _f32((height, width)),
        _i32((height, width)),
        _i32((n_tiles + 1,)),
        _i32((capacity,)),
        _i32((1,)),
    )
    return _call("rasterize_forward", out, means2d, conics, opacities, colors, depths, features, extents, **_size_attrs(width, height))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def rasterize(
    means2d, conics, opacities, colors, depths, features, extents, width: int, height: int, capacity: int, feature_geometry: bool
) -> tuple[Raster, jnp.ndarray]:
    """Returns the accumulated images and the number of tile intersections.

    Without gradients the sorted list is not kept (capacity 0); with gradients the forward keeps
    up to ``capacity`` entries for the backward, which bins again if there were more.
    """
    rgb, feat, depth, trans, _, _, _, n_isect = _raster_call(
        means2d, conics, opacities, colors, depths, features, extents, width, height, 0
    )
    return Raster(rgb, feat, depth, trans), n_isect[0]


def _rasterize_fwd(means2d, conics, opacities, colors, depths, features, extents, width, height, capacity, feature_geometry):
    inputs = (means2d, conics, opacities, colors, depths, features, extents)
    rgb, feat, depth, trans, last, tile_offsets, gids, n_isect = _raster_call(*inputs, width, height, capacity)
    return (Raster(rgb, feat, depth, trans), n_isect[0]), inputs + (trans, last, tile_offsets, gids, n_isect)


def _rasterize_bwd(width, height, capacity, feature_geometry, res, cot):
    raster_cot, _ = cot
    inputs = res[:7]
    out = tuple(_f32(x.shape) for x in inputs[:6])
    grads = _call(
        "rasterize_backward",
        out,
        *res,
        raster_cot.rgb,
        raster_cot.features,
        raster_cot.depth,
        raster_cot.trans,
        feature_geometry=bool(feature_geometry),
        **_size_attrs(width, height),
    )
    return tuple(grads) + (jnp.zeros_like(inputs[6]),)  # extents only cull: no gradient


rasterize.defvjp(_rasterize_fwd, _rasterize_bwd)
