"""A small scene through every CUDA code path, for compute-sanitizer (memcheck, racecheck):

    compute-sanitizer --tool memcheck python experiments/sanitize_rasterizer.py
    compute-sanitizer --tool racecheck --kernel-regex kns=fit3d python experiments/sanitize_rasterizer.py

Forward and backward for C = 1, 17, 64 and 128, with and without feature gradients into the
geometry, and with a sorted-list capacity too small (the backward re-bins).
"""

import jax
import jax.numpy as jnp

from fit3d_jax.render import rasterize
from fit3d_jax.render.random_scene import front_camera, random_scene


def main() -> None:
    camera = front_camera(203, 117, focal=100.0)
    for channels, feature_geometry, capacity in [(1, False, None), (17, True, None), (64, False, 1), (128, True, None)]:
        scene = random_scene(1500, camera, channels=channels, seed=channels, scale=0.03)

        def loss(*p, feature_geometry=feature_geometry, capacity=capacity):
            out = rasterize(*p, camera, backend="ffi", feature_geometry=feature_geometry, isect_capacity=capacity)
            return jnp.abs(out.rgb).mean() + jnp.abs(out.features).mean() + out.depth.mean() + out.alpha.mean()

        value, grads = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6))))(*scene)
        jax.block_until_ready(grads)
        print(f"C={channels} feature_geometry={feature_geometry} capacity={capacity}: loss {float(value):.5f}")
    print("sanitize run complete")


if __name__ == "__main__":
    main()
