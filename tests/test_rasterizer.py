"""The FFI rasterizer (the CPU build here; the CUDA build in test_rasterizer_gpu.py) against the
plain pure-JAX reference and finite differences, on fresh random scenes and edge cases. The
chunked pure-JAX backend ("jax") takes the edge cases, finite differences and vmap checks too
(where it costs little); its own tests are in test_rasterizer_chunked.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fit3d_jax.render import Camera, rasterize, reference
from fit3d_jax.render.random_scene import Scene, front_camera, random_scene
from fit3d_jax.render.rasterize import compose_output

IMAGE_OUTPUTS = ("rgb", "features", "alpha", "depth")
# Gradient tolerance (max-normalised): the CPU kernel follows the reference's arithmetic closely;
# on a GPU the fast exponential and fused multiply-adds differ by ~1e-6 per term, and gradients
# that are sums with cancellation (one Gaussian, random pixel weights) amplify that.
GRAD_TOL = 1e-4 if jax.default_backend() == "cpu" else 5e-4
PARAMS = ("means", "scales", "quats", "opacities", "sh", "features")
TILED = ("ffi", "jax")  # the binned backends, checked against the dense reference


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def small_scene(seed, n=300, width=61, height=45, channels=8, sh_coeffs=16, scale=0.05):
    camera = front_camera(width, height, focal=40.0)
    return random_scene(n, camera, channels=channels, sh_coeffs=sh_coeffs, seed=seed, scale=scale), camera


def render(scene: Scene, camera: Camera, backend: str, **kw):
    return rasterize(*scene, camera, jnp.array([0.2, 0.3, 0.4]), backend=backend, **kw)


# A pixel where a Gaussian's alpha lies at the 1/255 cutoff (or the transmittance at the 1e-4
# stop) is blended with or without it depending on float32 rounding, so two implementations can
# differ there by a whole contribution (seen: seed 517060941, alpha 2.7e-3 apart at one pixel of
# 2745). Comparisons on random scenes set such pixels aside, but only a few.
MAX_THRESHOLD_FLIPS = 2


def image_outputs(out, ref):
    """(name, out's image, ref's image) per output, as float64 (H, W, channels) arrays."""
    for name in IMAGE_OUTPUTS:
        a, b = np.asarray(getattr(out, name), np.float64), np.asarray(getattr(ref, name), np.float64)
        if name == "depth":  # sum(w z) / alpha: alpha = 1 - T cancels where it is small
            a, b = a * np.asarray(ref.alpha), b * np.asarray(ref.alpha)
        yield name, a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)


def threshold_flips(out, ref, what="") -> np.ndarray:
    """(H, W): pixels where an image output differs by over 1e-4 of its range (a rounding error
    is ~1e-7), asserted to be at most MAX_THRESHOLD_FLIPS."""
    flips = np.zeros(np.shape(ref.alpha), bool)
    for _, a, b in image_outputs(out, ref):
        flips |= np.abs(a - b).max(-1) > 1e-4 * np.abs(b).max()
    assert flips.sum() <= MAX_THRESHOLD_FLIPS, f"{what}{flips.sum()} pixels differ by more than rounding"
    return flips


def assert_outputs_match(out, ref, tol=1e-5, what="", skip=None):
    """Images within tol (max-normalised) outside the pixels `skip`; radii and visibility."""
    keep = np.ones(np.shape(ref.alpha), bool) if skip is None else ~skip
    for name, a, b in image_outputs(out, ref):
        err = rel_err(a[keep], b[keep])
        assert err < tol, f"{what}{name}: relative error {err:.2e}"
    # radius = ceil(3 sqrt(lambda_max)). Past ~4k px, float32 rounding moves 3 sqrt(lambda) by
    # ~1e-3 px between implementations, enough to cross an integer now and then (seen: 41675 vs
    # 41676 for a 1e3-scale Gaussian); below that the radii must agree exactly.
    radii, ref_radii = np.asarray(out.radii), np.asarray(ref.radii)
    allowed = np.where(ref_radii >= 4096, 1, 0)
    assert np.all(np.abs(radii - ref_radii) <= allowed), f"{what}radii: {radii} vs {ref_radii}"
    np.testing.assert_array_equal(out.visible, ref.visible)


def image_loss_fn(camera, backend, weights, **kw):
    """A random linear functional of every image output (so every cotangent is exercised)."""

    def loss(*params, screen_offset=None):
        out = render(Scene(*params), camera, backend, screen_offset=screen_offset, **kw)
        return sum(jnp.sum(getattr(out, k) * weights[k]) for k in IMAGE_OUTPUTS)

    return loss


def random_weights(rng, scene, camera, positive=False):
    """Per-pixel loss weights. Signed weights make a few Gaussians' gradients sums that cancel, so
    checks on tiny scenes use positive ones (a max-normalised error would measure the cancellation)."""
    h, w, c = camera.height, camera.width, scene.features.shape[1]
    shapes = dict(rgb=(h, w, 3), features=(h, w, c), alpha=(h, w), depth=(h, w))
    draw = (lambda s: rng.uniform(0.5, 1.5, s)) if positive else (lambda s: rng.normal(size=s))
    return {k: jnp.asarray(draw(s), jnp.float32) for k, s in shapes.items()}


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("channels,sh_coeffs", [(8, 16), (64, 9), (1, 1), (17, 4)])
def test_forward_matches_reference(seed, channels, sh_coeffs):
    scene, camera = small_scene(seed, channels=channels, sh_coeffs=sh_coeffs)
    out, ref = render(scene, camera, "ffi"), render(scene, camera, "reference")
    assert int(out.visible.sum()) > 50, "scene should have visible Gaussians"
    assert float(ref.alpha.max()) > 0.9, "scene should have opaque pixels"
    assert_outputs_match(out, ref, what=f"seed {seed}: ", skip=threshold_flips(out, ref, f"seed {seed}: "))


@pytest.mark.slow
def test_expected_depth_and_background(seed):
    scene, camera = small_scene(seed, n=40)
    out = render(scene, camera, "ffi")
    raster = reference.rasterize_dense(*_projected_args(scene, camera))
    alpha = 1 - np.asarray(raster.trans)
    hit = alpha > 0
    # depth = sum(w z) / alpha; compare times alpha (alpha = 1 - T cancels where alpha is small).
    depth_sum = np.asarray(raster.depth)
    np.testing.assert_allclose((np.asarray(out.depth) * alpha)[hit], depth_sum[hit], atol=1e-5 * np.abs(depth_sum).max())
    assert np.all(np.asarray(out.depth)[~hit] == 0)
    empty = np.asarray(out.alpha) == 0
    if empty.any():
        np.testing.assert_allclose(np.asarray(out.rgb)[empty], np.broadcast_to([0.2, 0.3, 0.4], (empty.sum(), 3)), rtol=1e-6)


def _projected_args(scene, camera):
    proj = reference.project(*scene[:5], 3, camera)
    return (proj.means2d, proj.conics, jnp.asarray(scene.opacities), proj.colors, proj.depths, jnp.asarray(scene.features), proj.extents,
            camera.width, camera.height)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("channels", [8, 64])
def test_gradients_match_reference_autodiff(seed, channels):
    scene, camera = small_scene(seed, channels=channels)
    flips = threshold_flips(render(scene, camera, "ffi"), render(scene, camera, "reference"), f"seed {seed}: ")
    weights = {k: jnp.where(flips.reshape(*flips.shape, *(1,) * (w.ndim - 2)), 0.0, w)
               for k, w in random_weights(np.random.default_rng(seed), scene, camera).items()}
    offset = jnp.zeros((scene.means.shape[0], 2), jnp.float32)
    argnums = tuple(range(6))
    grads = {}
    for backend in ("ffi", "reference"):
        loss = image_loss_fn(camera, backend, weights)
        g_params = jax.grad(loss, argnums)(*scene, screen_offset=offset)
        g_offset = jax.grad(lambda o, loss=loss: loss(*scene, screen_offset=o))(offset)
        grads[backend] = dict(zip(PARAMS, g_params), screen_offset=g_offset)
    for name, ref in grads["reference"].items():
        assert np.abs(ref).max() > 0, f"{name}: reference gradient is zero, the test would be void"
        err = rel_err(grads["ffi"][name], ref)
        assert err < GRAD_TOL, f"seed {seed}: d/d{name} relative error {err:.2e}"


@pytest.mark.slow
def test_gradients_match_finite_differences(seed):
    """Kernel and chunked-JAX gradients (float32) and reference autodiff (float64) against central differences of
    the float64 reference, along random directions per parameter group. Finite differences see
    the true derivative, so feature gradients are routed into the geometry here."""
    scene, camera32 = small_scene(seed, n=60, width=37, height=29)
    rng = np.random.default_rng(seed)
    weights = {k: np.asarray(v, np.float64) for k, v in random_weights(rng, scene, camera32).items()}
    weights32 = {k: jnp.asarray(v, jnp.float32) for k, v in weights.items()}
    kernel_grads = {b: jax.jit(jax.grad(image_loss_fn(camera32, b, weights32, feature_geometry=True), tuple(range(6))))(*scene)
                    for b in TILED}
    with jax.enable_x64(True):
        camera = Camera.create(np.eye(4), 40.0, 40.0, 37 / 2, 29 / 2, 37, 29, dtype=jnp.float64)
        scene64 = [jnp.asarray(x, jnp.float64) for x in scene]

        def loss64(*params):
            proj = reference.project(*params[:5], 3, camera)
            raster = reference.rasterize_dense(
                proj.means2d, proj.conics, params[3], proj.colors, proj.depths, params[5], proj.extents, 37, 29, True
            )
            out = compose_output(raster, proj.radii, jnp.array([0.2, 0.3, 0.4]), jnp.int32(0))
            return sum(jnp.sum(getattr(out, k) * weights[k]) for k in IMAGE_OUTPUTS)

        ref_grads = jax.grad(loss64, tuple(range(6)))(*scene64)

        def central_difference(i, v, eps):
            step = lambda sign: [x + sign * eps * v if j == i else x for j, x in enumerate(scene64)]
            return float((loss64(*step(1)) - loss64(*step(-1))) / (2 * eps))

        for i, name in enumerate(PARAMS):
            # Blending has jumps (the 1/255 alpha and 1e-4 transmittance thresholds); a direction
            # whose differences at eps and 2 eps disagree crossed one and is redrawn.
            for _ in range(4):
                v = rng.normal(size=scene64[i].shape)
                fd, fd2 = central_difference(i, v, 1e-8), central_difference(i, v, 2e-8)
                if abs(fd - fd2) <= 1e-5 * max(abs(fd), 1e-6):
                    break
            else:
                pytest.fail(f"seed {seed}: no smooth direction found for {name}")
            ad = float(jnp.vdot(ref_grads[i], v))
            scale = max(abs(fd), 1e-3 * float(np.abs(ref_grads[i]).max()) * np.sqrt(v.size), 1e-8)
            assert abs(ad - fd) < 1e-4 * scale, f"seed {seed}: reference d/d{name}: autodiff {ad} vs FD {fd}"
            for backend, grads in kernel_grads.items():
                kd = float(np.vdot(np.asarray(grads[i], np.float64), v))
                assert abs(kd - fd) < 2e-3 * scale, f"seed {seed}: {backend} d/d{name}: {kd} vs FD {fd}"


def test_feature_gradients_reach_features_only_by_default(seed):
    scene, camera = small_scene(seed)
    w = jnp.asarray(np.random.default_rng(seed).normal(size=(camera.height, camera.width, 8)), jnp.float32)

    def feature_loss(backend, feature_geometry):
        return lambda *p: jnp.sum(render(Scene(*p), camera, backend, feature_geometry=feature_geometry).features * w)

    routed = jax.grad(feature_loss("ffi", False), tuple(range(6)))(*scene)
    for name, g in zip(PARAMS[:5], routed[:5]):
        assert np.all(np.asarray(g) == 0), f"feature loss leaked into {name}"
    assert np.abs(routed[5]).max() > 0
    full = jax.grad(feature_loss("ffi", True), tuple(range(6)))(*scene)
    ref = jax.grad(feature_loss("reference", True), tuple(range(6)))(*scene)
    for name, a, b in zip(PARAMS, full, ref):
        if name == "sh":  # colours do not enter the feature image
            assert np.all(np.asarray(a) == 0)
            continue
        assert np.abs(b).max() > 0, name
        assert rel_err(a, b) < GRAD_TOL, f"feature_geometry d/d{name}: {rel_err(a, b):.2e}"


def test_active_sh_degree_ignores_higher_bands(seed):
    scene, camera = small_scene(seed, n=100)
    low = scene._replace(sh=scene.sh[:, :4])
    a = render(scene, camera, "ffi", sh_degree=1)
    b = render(low, camera, "ffi")
    np.testing.assert_allclose(a.rgb, b.rgb, rtol=1e-6, atol=1e-6)
    g = jax.grad(lambda sh: jnp.sum(render(scene._replace(sh=sh), camera, "ffi", sh_degree=1).rgb))(scene.sh)
    assert np.all(np.asarray(g)[:, 4:] == 0) and np.abs(g[:, :4]).max() > 0


# --------------------------------------------------------------------------- batching


def _turned_cameras(seed, camera, views=3):
    angles = np.random.default_rng(seed).uniform(-0.2, 0.2, views)
    viewmats = np.stack([np.eye(4)] * views)
    viewmats[:, 0, 0] = viewmats[:, 2, 2] = np.cos(angles)
    viewmats[:, 0, 2], viewmats[:, 2, 0] = np.sin(angles), -np.sin(angles)
    viewmats[:, 0, 3] = 0.1 * angles
    make = lambda m: Camera.create(m, 40.0, 40.0, camera.cx, camera.cy, camera.width, camera.height)
    return make(viewmats), [make(m) for m in viewmats]


def _vmapped_ffi_program(fn, *args):
    """Custom calls and loops of fn's program: vmap must add no loop around the kernels."""
    text = str(jax.make_jaxpr(fn)(*args))
    return text.count("ffi_call["), text.count("while[") + text.count("scan[")


def test_vmap_renders_views_in_one_call_per_stage(seed):
    """Cameras, features and opacities batched (means, scales, rotations and SH shared), a
    capacity small enough that the backward re-bins the views' shared list: outputs, per-view
    intersection counts and gradients equal the loop over views, from one call per stage."""
    scene, camera = small_scene(seed, n=120)
    cams, singles = _turned_cameras(seed, camera)
    rng = np.random.default_rng(seed)
    features = jnp.asarray(rng.normal(size=(3, *scene.features.shape)), jnp.float32)
    opacities = jnp.asarray(np.clip(scene.opacities * rng.uniform(0.5, 1.0, (3, 120)), 0, 1), jnp.float32)
    weights = random_weights(rng, scene, camera)

    def one(means, opacities, features, cam):
        def loss(means, opacities, features):
            out = render(scene._replace(means=means, opacities=opacities, features=features), cam, "ffi", isect_capacity=64)
            return sum(jnp.sum(getattr(out, k) * weights[k]) for k in IMAGE_OUTPUTS), out

        (_, out), grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(means, opacities, features)
        return out, grads

    many = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))
    outs, (g_means, g_opacities, g_features) = many(scene.means, opacities, features, cams)
    calls, loops = _vmapped_ffi_program(many, scene.means, opacities, features, cams)
    assert (calls, loops) == _vmapped_ffi_program(jax.jit(one), scene.means, opacities[0], features[0], singles[0])
    assert calls == 4 and loops == 0
    one = jax.jit(one)
    for i, cam in enumerate(singles):
        out, grads = one(scene.means, opacities[i], features[i], cam)
        assert int(out.n_isect) > 64 and int(outs.n_isect[i]) == int(out.n_isect)
        for k in IMAGE_OUTPUTS + ("radii",):
            np.testing.assert_allclose(getattr(outs, k)[i], getattr(out, k), rtol=1e-6, atol=1e-6, err_msg=k)
        for name, a, b in zip(("means", "opacities", "features"), (g_means, g_opacities, g_features), grads):
            assert rel_err(a[i], b) < 1e-5, f"view {i}: d/d{name}"

    # Differentiating through the vmap: the shared means get the sum over the views.
    rgb_sum = lambda m, c: jnp.sum(render(scene._replace(means=m), c, "ffi").rgb)
    g = jax.jit(jax.grad(lambda m: jnp.sum(jax.vmap(rgb_sum, (None, 0))(m, cams))))(scene.means)
    grad_one = jax.jit(jax.grad(rgb_sum))
    assert rel_err(g, sum(grad_one(scene.means, c) for c in singles)) < 1e-5


def test_vmap_error_names_the_view(seed):
    scene, camera = small_scene(seed, n=50)
    cams, _ = _turned_cameras(seed, camera, views=2)
    means = np.stack([scene.means, scene.means])
    means[1, 3] = np.nan
    with pytest.raises(Exception, match="view 1: Gaussian 3 has a non-finite"):
        jax.block_until_ready(jax.vmap(lambda m, c: render(scene._replace(means=m), c, "ffi").rgb)(means, cams))


# --------------------------------------------------------------------------- edge cases


def _moved(scene, means):
    return scene._replace(means=np.asarray(means, np.float32))


@pytest.mark.parametrize(
    "where",
    ["behind", "outside_left", "beyond_far"],
)
def test_nothing_visible(seed, where):
    scene, camera = small_scene(seed, n=50)
    m = scene.means.copy()
    if where == "behind":
        m[:, 2] = -m[:, 2]
    elif where == "outside_left":
        m[:, 0] = -10.0 * m[:, 2]
    else:
        m[:, 2] += 1e11
    scene = _moved(scene, m)
    for backend in TILED:
        rgb_sum = lambda mm, b=backend: (lambda o: (jnp.sum(o.rgb), o))(render(scene._replace(means=mm), camera, b))
        (_, res), g = jax.jit(jax.value_and_grad(rgb_sum, has_aux=True))(scene.means)
        assert not np.asarray(res.visible).any() and int(res.n_isect) == 0
        assert np.all(np.asarray(res.alpha) == 0) and np.all(np.asarray(res.features) == 0)
        np.testing.assert_allclose(res.rgb, np.broadcast_to([0.2, 0.3, 0.4], res.rgb.shape), rtol=1e-7)
        assert np.all(np.asarray(g) == 0), backend


def _check_against_reference(scene, camera, seed, what):
    """Both binned backends against the reference: images and gradients. Returns the FFI's output."""
    weights = random_weights(np.random.default_rng(seed), scene, camera, positive=True)

    def outputs_and_gradients(backend):  # one program per backend
        def loss(*params):
            out = render(Scene(*params), camera, backend)
            return sum(jnp.sum(getattr(out, k) * weights[k]) for k in IMAGE_OUTPUTS), out

        (_, out), grads = jax.jit(jax.value_and_grad(loss, tuple(range(6)), has_aux=True))(*scene)
        return out, grads

    ref, r = outputs_and_gradients("reference")
    for backend in reversed(TILED):
        out, g = outputs_and_gradients(backend)
        assert_outputs_match(out, ref, what=f"{what}, {backend} (seed {seed}): ")
        for name, a, b in zip(PARAMS, g, r):
            assert rel_err(a, b) < GRAD_TOL, f"{what}, {backend}: d/d{name} {rel_err(a, b):.2e}"
    return out


def test_one_gaussian(seed):
    scene, camera = small_scene(seed, n=1)
    scene = _moved(scene, [[0.1, -0.05, 1.0]])._replace(scales=np.array([[0.08, 0.03, 0.05]], np.float32))
    out = _check_against_reference(scene, camera, seed, "one Gaussian")
    assert bool(out.visible[0]) and float(out.alpha.max()) > 0.1


@pytest.mark.slow
def test_gaussians_across_tile_and_image_borders(seed):
    width, height = 53, 35  # not multiples of 16: partial tiles on the right and bottom
    camera = front_camera(width, height, focal=40.0)
    rng = np.random.default_rng(seed)
    # Centres on tile boundaries (x = 16k, y = 16k) and on/just beyond the image edges.
    px = rng.choice([0.0, 16.0, 32.0, 48.0, 53.0, -2.0, 55.0], 80) + rng.normal(0, 0.3, 80)
    py = rng.choice([0.0, 16.0, 32.0, 35.0, -2.0, 37.0], 80) + rng.normal(0, 0.3, 80)
    z = rng.uniform(1.0, 3.0, 80)
    means = np.stack([(px - width / 2) * z / 40.0, (py - height / 2) * z / 40.0, z], -1)
    scene = _moved(random_scene(80, camera, channels=8, seed=seed, scale=0.04), means)
    _check_against_reference(scene, camera, seed, "borders")


@pytest.mark.slow
def test_zero_and_huge_scales(seed):
    scene, camera = small_scene(seed, n=60)
    scales = scene.scales.copy()
    scales[:20] = 0.0  # degenerate: only the 0.3 px^2 dilation remains
    scales[20:23] = 1e3  # covers the whole image
    scales[23:26, 0] = 0.0  # flat in one axis
    out = _check_against_reference(scene._replace(scales=scales), camera, seed, "zero/huge scales")
    assert np.asarray(out.visible)[:20].any()


@pytest.mark.slow
def test_gaussian_covering_whole_image(seed):
    scene, camera = small_scene(seed, n=3)
    scene = _moved(scene, [[0.0, 0.0, 2.0], [0.2, 0.1, 3.0], [-0.3, 0.0, 4.0]])._replace(
        scales=np.array([[5.0, 3.0, 1.0], [2.0, 6.0, 4.0], [8.0, 5.0, 9.0]], np.float32),
        opacities=np.array([0.3, 0.5, 0.9], np.float32),
    )
    out = _check_against_reference(scene, camera, seed, "whole image")
    assert float(out.alpha.min()) > 0.5


@pytest.mark.parametrize("field", ["means", "scales", "quats", "opacities", "sh"])
def test_nonfinite_parameters_raise(seed, field):
    scene, camera = small_scene(seed, n=50)
    # Put the bad Gaussian in view so it is not culled for being off-screen.
    scene = _moved(scene, np.concatenate([[[0.0, 0.0, 2.0]], scene.means[1:]]))
    bad = getattr(scene, field).copy()
    bad[0] = np.nan
    with pytest.raises(Exception, match="Gaussian 0 has a non-finite"):
        jax.block_until_ready(render(scene._replace(**{field: bad}), camera, "ffi").rgb)


def test_nonfinite_features_propagate_to_pixels(seed):
    scene, camera = small_scene(seed, n=50)
    scene = _moved(scene, np.concatenate([[[0.0, 0.0, 2.0]], scene.means[1:]]))
    feats = scene.features.copy()
    feats[0, 0] = np.nan
    out = render(scene._replace(features=feats), camera, "ffi")
    f = np.asarray(out.features)
    assert np.isnan(f[..., 0]).any() and not np.isnan(f[..., 1:]).any()


def test_isect_capacity_overflow_rebins_in_backward(seed):
    scene, camera = small_scene(seed)
    weights = random_weights(np.random.default_rng(seed), scene, camera)
    big = jax.grad(image_loss_fn(camera, "ffi", weights), tuple(range(6)))(*scene)
    out = render(scene, camera, "ffi", isect_capacity=1)
    assert int(out.n_isect) > 1
    small = jax.grad(image_loss_fn(camera, "ffi", weights, isect_capacity=1), tuple(range(6)))(*scene)
    exact = jax.default_backend() == "cpu"  # the CPU backward is deterministic, CUDA atomics not
    for name, a, b in zip(PARAMS, small, big):
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("backend,feature_geometry", [pytest.param("ffi", False, marks=pytest.mark.slow), ("ffi", True),
                                                    pytest.param("jax", False, marks=pytest.mark.slow)])
def test_channels_beyond_one_call_render_in_chunks(seed, backend, feature_geometry):
    """More channels than one kernel call takes (130 = 128 + 2), and a 17-channel scene in chunks
    of 9: the images equal the one-chunk render, and so do the gradients. The CPU kernels blend
    each channel on its own, so there the equality is exact, and the geometry's gradients are
    exact where the chunks' features do not reach them; the chunked JAX backend blends channels
    as matrix products, equal within rounding."""
    exact = backend == "ffi" and jax.default_backend() == "cpu"
    for channels, chunk in ((17, 9), (130, 128)) if backend == "ffi" else ((17, 9),):
        scene, camera = small_scene(seed, n=60, channels=channels)
        weights = random_weights(np.random.default_rng(seed), scene, camera)
        whole = render(scene, camera, backend, channel_chunk=channels) if channels <= 128 else render(scene, camera, "reference")
        split = render(scene, camera, backend, channel_chunk=chunk)
        if channels <= 128:
            for name, a, b in image_outputs(split, whole):
                if exact:
                    np.testing.assert_array_equal(a, b, err_msg=name)
                else:
                    assert rel_err(a, b) < 1e-6, name
        else:
            assert_outputs_match(split, whole, skip=threshold_flips(split, whole))
        if channels > 128:
            continue
        grads = [jax.grad(image_loss_fn(camera, backend, weights, channel_chunk=c, feature_geometry=feature_geometry),
                          tuple(range(6)))(*scene) for c in (channels, chunk)]
        for name, a, b in zip(PARAMS, *grads):
            if feature_geometry and name != "features" or not exact:
                assert rel_err(a, b) < 1e-5, f"{channels} channels in chunks of {chunk}: d/d{name}"
            else:  # the extra chunks add zeros to the geometry, and each channel is its own sum
                np.testing.assert_array_equal(a, b, err_msg=f"{channels} channels in chunks of {chunk}: d/d{name}")


@pytest.mark.parametrize("field,value", [("features", 0), ("channel_chunk", 0), ("channel_chunk", 129)])
def test_unsupported_channel_counts_are_errors(field, value):
    scene, camera = small_scene(0, n=10)
    if field == "features":
        with pytest.raises(ValueError, match="at least one channel"):
            render(scene._replace(features=np.zeros((10, value), np.float32)), camera, "ffi")
    else:
        with pytest.raises(ValueError, match="channel_chunk"):
            render(scene, camera, "ffi", channel_chunk=value)


def test_bad_shapes_and_dtypes_are_errors():
    scene, camera = small_scene(0, n=10)
    with pytest.raises(AssertionError):
        render(scene._replace(quats=scene.quats[:, :3]), camera, "ffi")
    with pytest.raises(ValueError, match="coefficients"):
        render(scene._replace(sh=scene.sh[:, :5]), camera, "ffi")
    with pytest.raises(TypeError, match="means must be a floating-point array"):
        render(scene._replace(means=scene.means.astype(np.int32)), camera, "ffi")
