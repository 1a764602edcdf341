"""The fused attention kernel (the CPU build here; the CUDA build in test_fused_attention_gpu.py)
against plain XLA attention and finite differences, on fresh random inputs and edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fit3d_jax.models.fused_attention import fused_attention, fused_attention_with_lse

# Token counts around the CUDA kernel's 64-row tiles (1 token, partial tiles, exact tiles), and
# a head_dim only the CPU build takes (run where JAX's default backend is the CPU).
SHAPES = [
    (2, 1, 3, 64), (1, 5, 2, 64), (2, 64, 2, 64), (1, 65, 3, 64), (2, 130, 2, 64),
    pytest.param((1, 37, 2, 16), marks=pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU build only")),
]


def rel_err(a, b, floor=1e-12) -> float:
    """max |a - b| / max |b|; `floor` bounds the denominator where b may vanish."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor))


def reference(q, k, v):
    with jax.default_matmul_precision("float32"):
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")


def reference_lse(q, k):
    with jax.default_matmul_precision("float32"):
        scores = jnp.einsum("bqnh,bknh->bnqk", q, k) * q.shape[-1] ** -0.5
    return jax.nn.logsumexp(scores, axis=-1)


def random_qkv(rng, shape, spread=1.0):
    return tuple(jnp.asarray(rng.normal(0.0, spread, shape), jnp.float32) for _ in range(3))


def loss_fn(attention, weights):
    return lambda q, k, v: jnp.sum(attention(q, k, v) * weights)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)) if isinstance(s, tuple) else None)
def test_forward_and_lse_match_xla(rng, shape):
    q, k, v = random_qkv(rng, shape)
    out, lse = jax.jit(fused_attention_with_lse)(q, k, v)
    assert out.shape == shape and lse.shape == (shape[0], shape[2], shape[1])
    assert rel_err(out, reference(q, k, v)) < 1e-5
    assert rel_err(lse, reference_lse(q, k)) < 1e-6


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)) if isinstance(s, tuple) else None)
def test_gradients_match_xla(rng, shape):
    q, k, v = random_qkv(rng, shape)
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
    grads = jax.jit(jax.grad(loss_fn(fused_attention, weights), argnums=(0, 1, 2)))(q, k, v)
    expected = jax.grad(loss_fn(reference, weights), argnums=(0, 1, 2))(q, k, v)
    # With one token dq is exactly zero and the kernel returns rounding noise: measure every
    # gradient against the scale of the largest one.
    scale = max(float(jnp.abs(e).max()) for e in expected)
    for name, g, e in zip("qkv", grads, expected):
        assert rel_err(g, e, floor=scale) < 1e-5, f"d{name}"


def test_gradients_match_finite_differences(rng):
    shape = (1, 9, 2, 64)
    q, k, v = random_qkv(rng, shape)
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
    f = jax.jit(loss_fn(fused_attention, weights))
    grads = jax.grad(loss_fn(fused_attention, weights), argnums=(0, 1, 2))(q, k, v)
    eps = 1e-2
    for i, name in enumerate("qkv"):
        direction = jnp.asarray(rng.normal(size=shape), jnp.float32)
        args_plus = [q, k, v]
        args_minus = [q, k, v]
        args_plus[i] = args_plus[i] + eps * direction
        args_minus[i] = args_minus[i] - eps * direction
        numeric = (float(f(*args_plus)) - float(f(*args_minus))) / (2 * eps)
        analytic = float(jnp.vdot(grads[i], direction))
        assert abs(numeric - analytic) <= 2e-3 * max(abs(analytic), 1.0), f"d{name}: {numeric} vs {analytic}"


def test_peaked_softmax_stays_finite_and_exact(rng):
    """Scores of several hundred: the row maximum must be subtracted before exponentiating. Their
    float32 rounding (~3e-5 relative after exp) bounds the agreement with XLA here."""
    q, k, v = random_qkv(rng, (1, 70, 2, 64), spread=6.0)
    out = fused_attention(q, k, v)
    assert np.isfinite(np.asarray(out)).all()
    assert rel_err(out, reference(q, k, v)) < 1e-4
    weights = jnp.ones_like(q)
    grads = jax.grad(loss_fn(fused_attention, weights), argnums=(0, 1, 2))(q, k, v)
    expected = jax.grad(loss_fn(reference, weights), argnums=(0, 1, 2))(q, k, v)
    for name, g, e in zip("qkv", grads, expected):
        assert np.isfinite(np.asarray(g)).all(), f"d{name}"
        assert rel_err(g, e) < 1e-4, f"d{name}"


def test_vmap_runs_per_element(rng):
    q, k, v = random_qkv(rng, (3, 2, 20, 2, 64))
    out = jax.vmap(fused_attention)(q, k, v)
    np.testing.assert_allclose(out, jax.vmap(reference)(q, k, v), rtol=0, atol=1e-5)


def test_rejects_other_dtypes_and_mismatched_shapes(rng):
    q, k, v = random_qkv(rng, (1, 8, 2, 64))
    with pytest.raises(ValueError, match="float32 inputs; k is bfloat16"):
        fused_attention(q, k.astype(jnp.bfloat16), v)
    with pytest.raises(ValueError, match=r"got q \(1, 8, 2, 64\), v \(1, 9, 2, 64\)"):
        fused_attention(q, k, jnp.zeros((1, 9, 2, 64), jnp.float32))


def test_empty_batch_gives_empty_outputs_and_gradients():
    q = jnp.zeros((0, 5, 2, 64), jnp.float32)
    out, lse = fused_attention_with_lse(q, q, q)
    assert out.shape == (0, 5, 2, 64) and lse.shape == (0, 2, 5)
    grads = jax.grad(lambda q, k, v: jnp.sum(fused_attention(q, k, v)), argnums=(0, 1, 2))(q, q, q)
    assert all(g.shape == q.shape for g in grads)
