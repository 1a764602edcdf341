"""Pinhole cameras for the rasterizer (OpenCV convention: x right, y down, looking down +z)."""

from __future__ import annotations

import chex
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Camera:
    """A pinhole camera. Pixel (row i, col j) has its centre at (j + 0.5, i + 0.5).

    Array fields may carry leading batch dimensions (``jax.vmap`` over cameras); width and
    height are static.
    """

    viewmat: jnp.ndarray  # (4, 4) world-to-camera
    fx: jnp.ndarray
    fy: jnp.ndarray
    cx: jnp.ndarray
    cy: jnp.ndarray
    near: jnp.ndarray
    far: jnp.ndarray
    width: int = struct.field(pytree_node=False)
    height: int = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        viewmat,
        fx: float,
        fy: float,
        cx: float,
        cy: float,
        width: int,
        height: int,
        near: float = 0.01,
        far: float = 1e10,
        dtype=jnp.float32,
    ) -> Camera:
        """Validates the static parts and converts the rest to arrays of ``dtype``."""
        if int(width) != width or int(height) != height or width <= 0 or height <= 0:
            raise ValueError(f"Camera width/height must be positive integers, got {width}x{height}")
        if not isinstance(near, jnp.ndarray) and not near > 0:
            raise ValueError(f"Camera near plane must be > 0, got {near}")
        viewmat = jnp.asarray(viewmat, dtype)
        chex.assert_shape(viewmat, (..., 4, 4))
        arr = lambda v: jnp.broadcast_to(jnp.asarray(v, dtype), viewmat.shape[:-2])  # batch like viewmat
        return cls(viewmat, arr(fx), arr(fy), arr(cx), arr(cy), arr(near), arr(far), int(width), int(height))

    @classmethod
    def from_intrinsics(cls, viewmat, intrinsics, width: int, height: int) -> Camera:
        """The camera of a (..., 4) ``intrinsics`` row fx, fy, cx, cy (traced values are fine), with
        the default near and far planes: how stages I and II build their views' cameras."""
        return cls.create(viewmat, *(intrinsics[..., k] for k in range(4)), width, height)

    def pack(self) -> jnp.ndarray:
        """The kernels' camera operand: viewmat (16), fx, fy, cx, cy, near, far, 0, 0 (24 values:
        kCameraParams and Camera::from_params in ffi_kernels/include/fit3d/common.h)."""
        scalars = jnp.stack([self.fx, self.fy, self.cx, self.cy, self.near, self.far], axis=-1)
        flat = self.viewmat.reshape(self.viewmat.shape[:-2] + (16,))
        pad = jnp.zeros(flat.shape[:-1] + (2,), flat.dtype)
        return jnp.concatenate([flat, scalars, pad], axis=-1).astype(jnp.float32)
