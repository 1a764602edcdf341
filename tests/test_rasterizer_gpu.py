"""CUDA rasterizer against the CPU build of the same algorithm (run on the GPU machine:
``pytest -m gpu tests/test_rasterizer_gpu.py``; skipped elsewhere).

Both builds blend the same sorted lists with the same shared math, but the GPU uses the fast
exponential and fused multiply-adds, so a pair can land on the other side of the 1/255 or 1e-4
thresholds: isolated pixels may differ by one contribution. The checks therefore use norm-wise
relative errors (and report the max), and gradients also differ in atomic summation order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fit3d_jax.render import rasterize
from fit3d_jax.render.random_scene import front_camera, random_scene

PARAMS = ("means", "scales", "quats", "opacities", "sh", "features")


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA device")]


def norm_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def run_on(device, fn, *args):
    args = jax.device_put(args, device)
    with jax.default_device(device):
        return jax.device_get(jax.jit(fn)(*args))


def fit3d_step(camera, feature_geometry=False):
    """The FiT3D objective: value and gradients of mean|rgb| + mean|features| (+ alpha, depth so
    that every output's cotangent is exercised)."""

    def loss(*params):
        out = rasterize(*params, camera, jnp.array([0.1, 0.2, 0.3]), backend="ffi", feature_geometry=feature_geometry)
        images = (out.rgb, out.features, out.alpha, out.depth)
        return jnp.abs(out.rgb).mean() + jnp.abs(out.features).mean() + 0.1 * out.alpha.mean() + 0.01 * out.depth.mean(), images

    return jax.value_and_grad(loss, argnums=tuple(range(6)), has_aux=True)


@pytest.mark.parametrize(
    "n,width,height,channels,feature_geometry",
    [
        (2_000, 203, 117, 1, False),
        (2_000, 203, 117, 17, True),
        (20_000, 320, 240, 128, False),
        (250_000, 876, 584, 64, False),
        (1_000_000, 876, 584, 64, False),
    ],
)
def test_cuda_matches_cpu(n, width, height, channels, feature_geometry):
    camera = front_camera(width, height, focal=width / 2)
    scene = random_scene(n, camera, channels=channels, seed=n + channels)
    step = fit3d_step(camera, feature_geometry)
    (loss_gpu, images_gpu), grads_gpu = run_on(jax.devices("gpu")[0], step, *scene)
    (loss_cpu, images_cpu), grads_cpu = run_on(jax.devices("cpu")[0], step, *scene)
    report = {}
    for name, a, b in zip(("rgb", "features", "alpha", "depth"), images_gpu, images_cpu):
        report[name] = (norm_err(a, b), float(np.abs(a - b).max()))
        assert report[name][0] < 1e-5, f"{name}: {report[name]}"
    for name, a, b in zip(PARAMS, grads_gpu, grads_cpu):
        assert np.abs(b).max() > 0, f"CPU gradient of {name} is zero"
        report["d_" + name] = (norm_err(a, b), float(np.abs(a - b).max()))
        assert report["d_" + name][0] < 1e-4, f"d/d{name}: {report['d_' + name]}"
    assert abs(float(loss_gpu) - float(loss_cpu)) <= 1e-5 * abs(float(loss_cpu))
    print(f"\nN={n} {width}x{height} C={channels} fg={feature_geometry}: " + ", ".join(f"{k} {v[0]:.1e}/{v[1]:.1e}" for k, v in report.items()))


@pytest.mark.parametrize("capacity", [None, 1_000])  # 1000: the backward re-bins the shared list
def test_cuda_vmap_over_cameras_equals_single_views(capacity):
    """Four views in one batched call per stage equal four single-view calls: on CUDA, images
    exactly (the shared sort keeps each view's order) and gradients up to atomic summation order;
    on the CPU build, both exactly. (Single-view CUDA against CPU: test_cuda_matches_cpu.)"""
    n, width, height = 20_000, 320, 240
    camera = front_camera(width, height, focal=width / 2)
    scene = tuple(random_scene(n, camera, channels=32, seed=11))
    angles = np.linspace(-0.15, 0.15, 4)
    viewmats = np.stack([np.eye(4, dtype=np.float32)] * 4)
    viewmats[:, 0, 0] = viewmats[:, 2, 2] = np.cos(angles)
    viewmats[:, 0, 2], viewmats[:, 2, 0] = np.sin(angles), -np.sin(angles)
    options = {} if capacity is None else {"isect_capacity": capacity}

    def step(params, viewmat):
        def loss(params):
            out = rasterize(*params, camera.replace(viewmat=viewmat), jnp.array([0.1, 0.2, 0.3]), backend="ffi", **options)
            images = (out.rgb, out.features, out.alpha, out.depth)
            return jnp.abs(out.rgb).mean() + jnp.abs(out.features).mean() + 0.1 * out.alpha.mean() + 0.01 * out.depth.mean(), images

        return jax.value_and_grad(loss, has_aux=True)(params)

    batched = lambda params, viewmats: jax.vmap(step, (None, 0))(params, viewmats)
    for kind in ("gpu", "cpu"):
        device = jax.devices(kind)[0]
        (_, images), grads = run_on(device, batched, scene, viewmats)
        for i, m in enumerate(viewmats):
            (_, images_one), grads_one = run_on(device, step, scene, m)
            for name, a, b in zip(("rgb", "features", "alpha", "depth"), images, images_one):
                np.testing.assert_array_equal(a[i], b, err_msg=f"{kind} view {i} {name}")
            for name, a, b in zip(PARAMS, grads, grads_one):
                assert np.abs(b).max() > 0, f"{kind} view {i}: d/d{name} is zero"
                if kind == "cpu":
                    np.testing.assert_array_equal(a[i], b, err_msg=f"cpu view {i} d/d{name}")
                else:
                    assert norm_err(a[i], b) < 1e-5, f"gpu view {i} d/d{name}: {norm_err(a[i], b):.1e}"
