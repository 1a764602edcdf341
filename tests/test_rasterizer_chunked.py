"""The chunked pure-JAX rasterizer (backend="jax", fit3d_jax/render/chunked.py) against the dense
reference: lists spanning several chunks that saturate early, lists ending exactly at chunk
boundaries, depth ties, tile batches, capacity overflow and vmap over cameras. Edge cases, finite
differences and the plain vmap check run for it in test_rasterizer.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_rasterizer import (
    GRAD_TOL,
    IMAGE_OUTPUTS,
    PARAMS,
    _projected_args,
    assert_outputs_match,
    random_weights,
    rel_err,
    render,
    threshold_flips,
)

from fit3d_jax.render import Camera, chunked
from fit3d_jax.render.random_scene import Scene, front_camera, random_scene

_forward = jax.jit(chunked._forward, static_argnums=(7, 8, 9, 10))
_bin = jax.jit(chunked._bin, static_argnums=(3, 4, 5))


def saturating_scene(seed):
    """32x32 (4 tiles) with ~290 Gaussians per tile (5 chunks) and opaque enough that every pixel
    stops after 60-150 of them."""
    camera = front_camera(32, 32, focal=24.0)
    scene = random_scene(400, camera, channels=8, sh_coeffs=4, seed=seed, scale=0.3, z_range=(1.0, 4.0))
    return scene._replace(opacities=np.clip(1.5 * scene.opacities, 0, 0.95).astype(np.float32)), camera


@functools.partial(jax.jit, static_argnames=("backend", "feature_geometry", "tile_batches"))
def outputs_and_grads(params, offset, weights, camera, backend, feature_geometry, tile_batches=1):
    """Every image output and the gradients of a random linear functional of them w.r.t. the six
    parameter arrays and the screen offset."""
    options = dict(tile_batches=tile_batches) if backend == "jax" else {}

    def loss(params, offset):
        out = render(Scene(*params), camera, backend, screen_offset=offset, feature_geometry=feature_geometry, **options)
        return sum(jnp.sum(getattr(out, k) * weights[k]) for k in IMAGE_OUTPUTS), out

    (_, out), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, offset)
    return out, grads[0] + (grads[1],)


def compare(params, camera, weights, what, **kw):
    offset = jnp.zeros((params[0].shape[0], 2), jnp.float32)
    out, grads = outputs_and_grads(params, offset, weights, camera, "jax", **kw)
    kw.pop("tile_batches", None)
    ref, ref_grads = outputs_and_grads(params, offset, weights, camera, "reference", **kw)
    skip = threshold_flips(out, ref, what)
    assert not skip.any(), f"{what}: {skip.sum()} pixels differ beyond rounding"
    assert_outputs_match(out, ref, what=what)
    for name, a, b in zip(PARAMS + ("screen_offset",), grads, ref_grads):
        assert np.abs(b).max() > 0, f"{what}: d/d{name} is zero in the reference, the check would be void"
        assert rel_err(a, b) < GRAD_TOL, f"{what}: d/d{name} relative error {rel_err(a, b):.2e}"
    return out, grads


@pytest.mark.slow
def test_lists_over_several_chunks_saturating_early(seed):
    """Geometry gradients of the feature image too (feature_geometry=True); the default routing
    is checked on the chunk-boundary scene below and in test_rasterizer.py."""
    scene, camera = saturating_scene(seed)
    _, res = _forward(*_projected_args(scene, camera), 1 << 16, 1)
    size, last = np.asarray(res[2]), np.asarray(res[3])
    assert size.min() > 4 * chunked.CHUNK, "every tile's list should span several chunks"
    assert last.max() < size.min() - chunked.CHUNK, "every pixel should stop a chunk or more before its list ends"
    weights = random_weights(np.random.default_rng(seed), scene, camera)
    params = tuple(map(jnp.asarray, scene))
    out, grads = compare(params, camera, weights, f"seed {seed}: ", feature_geometry=True)
    assert float(out.alpha.min()) > 0.99
    # Tiles in 3 batches (longest lists first, one padding tile): the same sums.
    out3, grads3 = outputs_and_grads(params, jnp.zeros((400, 2)), weights, camera, "jax", True, tile_batches=3)
    for k in IMAGE_OUTPUTS:
        np.testing.assert_array_equal(getattr(out3, k), getattr(out, k), err_msg=k)
    for name, a, b in zip(PARAMS, grads3, grads):
        assert rel_err(a, b) < 1e-6, name


@pytest.mark.slow
def test_list_ends_on_chunk_boundaries_and_depth_ties(seed):
    """One 16x16 tile whose list holds CHUNK - 1, CHUNK, CHUNK + 1 and 2 CHUNK Gaussians (the
    others are behind the camera), in groups of equal depth overlapping each other: the order
    within a group is the index order."""
    k = chunked.CHUNK
    n = 2 * k + 1
    camera = front_camera(16, 16, focal=12.0)
    rng = np.random.default_rng(seed)
    base = random_scene(n, camera, channels=5, sh_coeffs=1, seed=seed, scale=0.15)
    z = 1.0 + 0.25 * (np.arange(n) // 7)  # ties in groups of 7
    xy = rng.uniform(-0.2, 0.2, (n, 2)) * z[:, None]
    opacities = rng.uniform(0.02, 0.12, n).astype(np.float32)  # never saturates: every entry counts
    weights = random_weights(rng, base, camera)
    for visible in (k - 1, k, k + 1, 2 * k):
        means = np.concatenate([xy, z[:, None]], -1)
        means[visible:, 2] = -1.0
        scene = base._replace(means=means.astype(np.float32), opacities=opacities)
        proj = _projected_args(scene, camera)
        assert int(_bin(proj[0], proj[6], proj[4], 16, 16, 1 << 16)[2][0]) == visible
        compare(tuple(map(jnp.asarray, scene)), camera, weights, f"seed {seed}, {visible} in the list: ", feature_geometry=False)


def test_capacity_overflow_raises_and_poisons(seed, monkeypatch):
    scene, camera = saturating_scene(seed)
    with pytest.raises(Exception, match="isect_capacity=1000"):
        jax.block_until_ready(render(scene, camera, "jax", isect_capacity=1000).rgb)
    # Without the error (a caller that ignores it), the images and gradients are NaN.
    monkeypatch.setattr(chunked, "_raise_on_overflow", lambda *args, **kw: None)

    def feature_sum(features):
        out = render(scene._replace(features=features), camera, "jax", isect_capacity=999)
        return jnp.sum(out.features), out

    (_, out), g = jax.jit(jax.value_and_grad(feature_sum, has_aux=True))(scene.features)
    assert int(out.n_isect) > 999
    for k in IMAGE_OUTPUTS:
        assert np.isnan(np.asarray(getattr(out, k))).all(), k
    assert np.isnan(np.asarray(g)).all()


@pytest.mark.slow
def test_vmap_over_cameras_is_batched_and_equals_the_loop(seed):
    scene, camera = saturating_scene(seed)
    angles = np.random.default_rng(seed).uniform(-0.15, 0.15, 3)
    viewmats = np.stack([np.eye(4)] * 3)
    viewmats[:, 0, 0] = viewmats[:, 2, 2] = np.cos(angles)
    viewmats[:, 0, 2], viewmats[:, 2, 0] = np.sin(angles), -np.sin(angles)
    make = lambda m: Camera.create(m, 24.0, 24.0, 16.0, 16.0, 32, 32)
    weights = random_weights(np.random.default_rng(seed), scene, camera)
    params, offset = tuple(map(jnp.asarray, scene)), jnp.zeros((400, 2))
    one = functools.partial(outputs_and_grads, backend="jax", feature_geometry=True)  # compiled above already
    many = jax.jit(jax.vmap(one, in_axes=(None, None, None, 0)))
    outs, grads = many(params, offset, weights, make(viewmats))
    for i, m in enumerate(viewmats):
        out, g = one(params, offset, weights, make(m))
        for k in IMAGE_OUTPUTS:
            np.testing.assert_allclose(getattr(outs, k)[i], getattr(out, k), rtol=1e-6, atol=1e-6, err_msg=k)
        for name, a, b in zip(PARAMS + ("screen_offset",), grads, g):
            assert rel_err(a[i], b) < 1e-5, f"camera {i}: d/d{name}"
    # Batched, not a loop over the cameras: vmap adds no loop to the program.
    count = lambda jaxpr: str(jaxpr).count("while[")
    assert count(jax.make_jaxpr(many)(params, offset, weights, make(viewmats))) == count(
        jax.make_jaxpr(one)(params, offset, weights, make(viewmats[0])))
