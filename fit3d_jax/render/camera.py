"""Pinhole cameras for the rasterizer (OpenCV convention: x right, y down, looking down +z)."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import numpy as np
from flax import struct

# Must match kCameraParams and Camera::from_params in ffi_kernels/include/fit3d/common.h.
CAMERA_PARAMS = 24


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
    def look_at(cls, eye, target, up, fx, fy, width, height, **kw) -> Camera:
        """A camera at ``eye`` looking at ``target`` with image-up roughly ``-up`` (y down)."""
        eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
        z = target - eye
        z /= np.linalg.norm(z)
        x = np.cross(z, up)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        rot = np.stack([x, y, z])  # rows: camera axes in world coordinates
        viewmat = np.eye(4)
        viewmat[:3, :3] = rot
        viewmat[:3, 3] = -rot @ eye
        return cls.create(viewmat, fx, fy, kw.pop("cx", width / 2), kw.pop("cy", height / 2), width, height, **kw)

    def pack(self) -> jnp.ndarray:
        """The kernels' camera operand: viewmat (16), fx, fy, cx, cy, near, far, 0, 0."""
        scalars = jnp.stack([self.fx, self.fy, self.cx, self.cy, self.near, self.far], axis=-1)
        flat = self.viewmat.reshape(self.viewmat.shape[:-2] + (16,))
        pad = jnp.zeros(flat.shape[:-1] + (2,), flat.dtype)
        return jnp.concatenate([flat, scalars, pad], axis=-1).astype(jnp.float32)
