"""Gaussian feature rasterization: ``rasterize(means, scales, quats, opacities, sh, features, camera)``.

A thin public API (:mod:`.rasterize`) over FFI kernels (:mod:`.ffi`, sources in ffi_kernels/)
with a plain pure-JAX reference (:mod:`.reference`, for tests) and a chunked pure-JAX rasterizer
(:mod:`.chunked`, ``backend="jax"``: TPUs).
"""

from fit3d_jax.render.camera import Camera
from fit3d_jax.render.rasterize import RenderOutput, default_isect_capacity, rasterize, resolve_backend

__all__ = ["Camera", "RenderOutput", "default_isect_capacity", "rasterize", "resolve_backend"]
