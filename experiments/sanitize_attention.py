"""The fused attention's CUDA kernels (forward and backward) on small shapes, for compute-sanitizer:

    compute-sanitizer --tool memcheck python experiments/sanitize_attention.py
    compute-sanitizer --tool racecheck python experiments/sanitize_attention.py

A partial last tile (130 tokens), a single token and exact tiles with two batch elements.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.models.fused_attention import fused_attention


def main() -> None:
    for shape in [(1, 130, 2, 64), (1, 1, 1, 64), (2, 64, 1, 64)]:
        q, k, v, w = (jnp.asarray(np.random.default_rng(i).normal(size=shape), jnp.float32) for i in range(4))
        grads = jax.grad(lambda q, k, v, w: jnp.sum(fused_attention(q, k, v) * w), argnums=(0, 1, 2))(q, k, v, w)
        print(shape, "max |grad|:", [float(jnp.abs(g).max()) for g in grads], flush=True)


if __name__ == "__main__":
    main()
