"""Fused float32 softmax attention through the FFI kernels, with its hand-written backward.

On the GPU the kernel computes every product in 3xTF32 on tensor cores (float32 accuracy, as
PyTorch's float32 memory-efficient attention) and never materialises the scores; it takes
head_dim 64, the head size of every DINOv2 ViT. Its backward adds dq up with float32 atomics,
so dq's last bits may differ between runs; out, dk and dv are deterministic. The CPU build (any
head_dim) runs the same algorithm in plain float32, deterministically.

    out = fused_attention(q, k, v)        # (B, T, N, H) float32, like jax.nn.dot_product_attention
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax import kernels

CUDA_HEAD_DIM = 64


def _check(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dtype != jnp.float32:
            raise ValueError(f"fused_attention takes float32 inputs; {name} is {x.dtype}")
        if x.ndim != 4 or x.shape != q.shape:
            raise ValueError(
                f"fused_attention takes q, k, v of one shape (batch, tokens, heads, head_dim); "
                f"got q {q.shape}, {name} {x.shape}"
            )


def _scale(q: jax.Array) -> np.float32:
    return np.float32(q.shape[-1] ** -0.5)


def fused_attention_with_lse(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Softmax attention on (B, T, N, H) float32 inputs, scale 1/sqrt(H); also returns each
    query's log-sum-exp of its scaled scores, (B, N, T)."""
    _check(q, k, v)
    batch, tokens, heads, _ = q.shape
    out_shapes = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((batch, heads, tokens), jnp.float32))
    return tuple(kernels.call("attention_forward", out_shapes, q, k, v, scale=_scale(q)))


@jax.custom_vjp
def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Softmax attention on (B, T, N, H) float32 inputs, scale 1/sqrt(H)."""
    return fused_attention_with_lse(q, k, v)[0]


def _fused_attention_fwd(q, k, v):
    out, lse = fused_attention_with_lse(q, k, v)
    return out, (q, k, v, out, lse)


def _fused_attention_bwd(residuals, d_out):
    q, k, v, out, lse = residuals
    delta = jnp.sum(d_out * out, axis=-1).transpose(0, 2, 1)  # (B, N, T): rowsum(dO * O)
    shapes = (jax.ShapeDtypeStruct(q.shape, jnp.float32),) * 3
    return tuple(kernels.call("attention_backward", shapes, q, k, v, d_out, lse, delta, scale=_scale(q)))


fused_attention.defvjp(_fused_attention_fwd, _fused_attention_bwd)
