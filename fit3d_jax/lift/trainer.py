"""Stage I: fit feature Gaussians and a scene decoder to one scene's images and DINOv2 features.

The authors' recipe (../shared/REFERENCE.md, 3DGS defaults): one random training view per
iteration, black background, SH degree +1 every 1000 iterations, loss
0.8 L1 + 0.2 (1 - SSIM) + 1.0 L1(decoded features, targets) over unmasked pixels, feature
gradients to the features and decoder only (the rasterizer routes them), Adam (eps 1e-15) with
per-group learning rates and the means' exponential decay, adaptive density control on its
schedule. The step is jitted once per capacity; densification runs between steps on the same
fixed-capacity buffers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from fit3d_jax.harness import guard
from fit3d_jax.lift import density
from fit3d_jax.lift.gaussians import Gaussians, activated, compact, resize
from fit3d_jax.lift.losses import cosine_similarity, l1, psnr, ssim
from fit3d_jax.render import Camera, rasterize


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Optimisation settings; defaults are the authors' (3DGS) values for 30k iterations."""

    iterations: int = 30_000
    feature_dim: int = 64
    lr_means: float = 1.6e-4  # times the scene extent, decaying exponentially to lr_means_final
    lr_means_final: float = 1.6e-6
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 0.05
    lr_sh_dc: float = 2.5e-3
    lr_sh_rest: float = 1.25e-4
    lr_features: float = 6.25e-5
    lr_decoder: float = 6.25e-5
    lambda_dssim: float = 0.2
    lambda_feature: float = 1.0
    sh_every: int = 1000  # one more SH degree every this many iterations (up to 3)
    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    densify_grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    min_opacity: float = 0.005
    opacity_reset_every: int = 3000  # 0 disables the reset
    max_screen_size: float = 20.0  # pixels; pruning by size starts after size_prune_from
    size_prune_from: int = 3000  # 3DGS: after the first opacity reset


class Decoder(nn.Module):
    """The scene-specific decoder: one 3x3 convolution, no bias, F -> D channels. Default matmul
    precision: TF32 on GPUs, as PyTorch's default cuDNN convolutions the authors used."""

    out_dim: int

    @nn.compact
    def __call__(self, x):
        return nn.Conv(self.out_dim, (3, 3), padding=1, use_bias=False)(x)


@struct.dataclass
class SceneArrays:
    """A scene's views, resident on the device: the step picks one by index (no transfers)."""

    images: jnp.ndarray  # (V, H, W, 3) uint8
    masks: jnp.ndarray  # (V, H, W) float32, 1 = pixel counts
    targets: jnp.ndarray  # (V, h, w, D) float16 DINOv2 tokens
    viewmats: jnp.ndarray  # (V, 4, 4) world-to-camera
    intrinsics: jnp.ndarray  # (V, 4) fx fy cx cy
    width: int = struct.field(pytree_node=False)
    height: int = struct.field(pytree_node=False)

    def camera(self, index) -> Camera:
        fx, fy, cx, cy = (self.intrinsics[index, k] for k in range(4))
        return Camera(self.viewmats[index], fx, fy, cx, cy, jnp.float32(0.01), jnp.float32(1e10), self.width, self.height)


@struct.dataclass
class LiftState:
    gaussians: Gaussians
    active: jnp.ndarray
    stats: density.DensityStats
    opt_state: Any
    decoder: Any
    decoder_opt_state: Any
    iteration: jnp.ndarray  # iterations done
    nonfinite: guard.NonFinite  # the first iteration whose loss or gradients were not finite

    @property
    def capacity(self) -> int:
        return self.gaussians.capacity


def scene_extent(camera_centers: np.ndarray) -> float:
    """3DGS's scene extent: 1.1 x the largest distance of a camera centre from their mean."""
    centers = np.asarray(camera_centers, np.float64)
    return float(1.1 * np.max(np.linalg.norm(centers - centers.mean(axis=0), axis=1)))


def gaussian_optimizer(recipe: Recipe, extent: float) -> optax.GradientTransformation:
    decay = recipe.lr_means_final / recipe.lr_means
    means_lr = lambda count: recipe.lr_means * extent * decay ** jnp.minimum(count / recipe.iterations, 1.0)
    lrs = Gaussians(
        means=means_lr,
        log_scales=recipe.lr_scales,
        quats=recipe.lr_quats,
        opacity_logits=recipe.lr_opacity,
        sh_dc=recipe.lr_sh_dc,
        sh_rest=recipe.lr_sh_rest,
        features=recipe.lr_features,
    )
    names = [f.name for f in dataclasses.fields(Gaussians)]
    labels = Gaussians(**{n: n for n in names})
    return optax.multi_transform({n: optax.adam(getattr(lrs, n), eps=1e-15) for n in names}, labels)


def decoder_optimizer(recipe: Recipe) -> optax.GradientTransformation:
    return optax.adam(recipe.lr_decoder, eps=1e-15)


def init_state(gaussians: Gaussians, active, recipe: Recipe, extent: float, target_dim: int, key) -> LiftState:
    decoder = Decoder(target_dim).init(key, jnp.zeros((1, 8, 8, recipe.feature_dim)))["params"]
    return LiftState(
        gaussians=gaussians,
        active=jnp.asarray(active),
        stats=density.DensityStats.zeros(gaussians.capacity),
        opt_state=gaussian_optimizer(recipe, extent).init(gaussians),
        decoder=decoder,
        decoder_opt_state=decoder_optimizer(recipe).init(decoder),
        iteration=jnp.int32(0),
        nonfinite=guard.NonFinite.none(),
    )


def resize_state(state: LiftState, capacity: int) -> LiftState:
    """The state with ``capacity`` slots for Gaussians (see ``gaussians.resize``)."""
    old = state.capacity
    return state.replace(
        gaussians=resize(state.gaussians, old, capacity),
        active=resize(state.active, old, capacity),
        stats=resize(state.stats, old, capacity),
        opt_state=resize(state.opt_state, old, capacity),
    )


def compact_state(state: LiftState) -> LiftState:
    """Drops the free slots once the set of Gaussians is final (densification over): the active
    Gaussians move to the front and the capacity shrinks to their count rounded up to 1024, so
    the rest of the run does not render, differentiate and update empty slots. One re-trace."""
    active = np.asarray(state.active)
    capacity = max(1024, -(-int(active.sum()) // 1024) * 1024)
    per_slot = {"gaussians": state.gaussians, "active": state.active, "stats": state.stats, "opt_state": state.opt_state}
    return state.replace(**compact(per_slot, active, min(capacity, len(active))))


def render(state: LiftState, data: SceneArrays, index, decoder_dim: int, sh_degree, screen_offset=None):
    """Renders view ``index``: (RenderOutput, decoded features (H, W, D))."""
    means, scales, quats, opacities, sh, feats = activated(state.gaussians, state.active)
    out = rasterize(
        means, scales, quats, opacities, sh, feats, data.camera(index), jnp.zeros(3), sh_degree=sh_degree, screen_offset=screen_offset
    )
    decoded = Decoder(decoder_dim).apply({"params": state.decoder}, out.features[None])[0]
    return out, decoded


def upsampled_target(data: SceneArrays, index) -> jnp.ndarray:
    """The view's DINOv2 tokens upsampled bilinearly to the image resolution (H, W, D)."""
    tokens = data.targets[index].astype(jnp.float32)
    return jax.image.resize(tokens, (data.height, data.width, tokens.shape[-1]), "bilinear", antialias=False)


GUARDED = ("loss", "l1", "ssim", "feature_l1", "gradients")  # what the step watches for non-finite values


def make_train_step(recipe: Recipe, extent: float, decoder_dim: int):
    gopt, dopt = gaussian_optimizer(recipe, extent), decoder_optimizer(recipe)

    def step(state: LiftState, data: SceneArrays, index):
        iteration = state.iteration + 1  # 1-based, as the authors count
        sh_degree = jnp.minimum(3, iteration // recipe.sh_every)
        image = data.images[index].astype(jnp.float32) / 255.0
        mask = data.masks[index]

        def loss_fn(gaussians, decoder, offset):
            out, decoded = render(state.replace(gaussians=gaussians, decoder=decoder), data, index, decoder_dim, sh_degree, offset)
            rgb_l1 = l1(out.rgb, image, mask)
            rgb_ssim = ssim(out.rgb, image, mask)
            feature_l1 = l1(decoded, upsampled_target(data, index), mask)
            loss = (1 - recipe.lambda_dssim) * rgb_l1 + recipe.lambda_dssim * (1 - rgb_ssim) + recipe.lambda_feature * feature_l1
            return loss, dict(loss=loss, l1=rgb_l1, ssim=rgb_ssim, feature_l1=feature_l1, radii=out.radii, n_isect=out.n_isect)

        offset = jnp.zeros((state.capacity, 2), jnp.float32)
        grads, aux = jax.grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(state.gaussians, state.decoder, offset)
        g_gauss, g_dec, g_offset = grads
        watched = {**aux, "gradients": guard.all_finite((g_gauss, g_dec))}
        updates, opt_state = gopt.update(g_gauss, state.opt_state, state.gaussians)
        d_updates, decoder_opt_state = dopt.update(g_dec, state.decoder_opt_state, state.decoder)
        stats = density.accumulate(state.stats, g_offset, aux.pop("radii"), data.width, data.height)
        stats = jax.tree.map(lambda new, old: jnp.where(iteration < recipe.densify_until, new, old), stats, state.stats)
        new_state = state.replace(
            gaussians=optax.apply_updates(state.gaussians, updates),
            opt_state=opt_state,
            decoder=optax.apply_updates(state.decoder, d_updates),
            decoder_opt_state=decoder_opt_state,
            stats=stats,
            iteration=iteration,
            nonfinite=state.nonfinite.record(iteration, watched, GUARDED),
        )
        return new_state, aux

    return jax.jit(step, donate_argnums=0)


def view_for_iteration(iteration: int, num_views: int, seed: int) -> int:
    """One random training view per iteration: a fresh permutation each pass over the views,
    derived from (seed, pass) so that a resumed run draws the same views."""
    epoch, position = divmod(iteration - 1, num_views)
    return int(np.random.default_rng([seed, epoch]).permutation(num_views)[position])


def _density_schedule(it: int, recipe: Recipe) -> tuple[bool, bool, bool]:
    """What follows iteration ``it``: (densify and prune, opacity reset, compaction)."""
    densify = recipe.densify_from < it < recipe.densify_until and it % recipe.densify_every == 0
    reset = bool(recipe.opacity_reset_every) and it % recipe.opacity_reset_every == 0 and it < recipe.iterations
    compaction = it == recipe.densify_until < recipe.iterations
    return densify, reset, compaction


def density_control_due(it: int, recipe: Recipe) -> bool:
    return any(_density_schedule(it, recipe))


def densify_if_due(state: LiftState, it: int, recipe: Recipe, extent: float, key) -> LiftState:
    """The authors' schedule, after iteration ``it``: densify and prune every densify_every
    iterations in (densify_from, densify_until), then reset opacities every opacity_reset_every
    iterations. Grows the capacity (a re-trace) when free slots run out, and drops the free slots
    at densify_until, when the Gaussians are final, if they are a quarter or more of them."""
    densify, reset, compaction = _density_schedule(it, recipe)
    if densify:
        plan = density.plan(state.gaussians, state.active, state.stats, recipe.densify_grad_threshold, recipe.percent_dense, extent)
        needed, free = int(plan.needed), int(plan.free)
        if needed > free:
            active = int(state.active.sum())
            capacity = 1 << max(14, math.ceil(math.log2(1.5 * (active + needed))))
            state = resize_state(state, capacity)
            plan = density.plan(state.gaussians, state.active, state.stats, recipe.densify_grad_threshold, recipe.percent_dense, extent)
        max_screen = recipe.max_screen_size if it > recipe.size_prune_from else 0.0
        gaussians, active, opt_state, stats = density.densify_and_prune(
            state.gaussians, state.active, state.stats, state.opt_state, plan,
            jax.random.fold_in(key, it), recipe.min_opacity, extent, max_screen,
        )
        state = state.replace(gaussians=gaussians, active=active, opt_state=opt_state, stats=stats)
    if reset:
        gaussians, opt_state = density.reset_opacity(state.gaussians, state.opt_state)
        state = state.replace(gaussians=gaussians, opt_state=opt_state)
    if compaction and int(state.active.sum()) <= 0.75 * state.capacity:
        state = compact_state(state)  # worth its re-trace when it frees a quarter of the slots or more
    return state


def make_eval(decoder_dim: int):
    @jax.jit
    def evaluate(state: LiftState, data: SceneArrays, index):
        out, decoded = render(state, data, index, decoder_dim, jnp.int32(3))
        image = data.images[index].astype(jnp.float32) / 255.0
        mask = data.masks[index]
        target = upsampled_target(data, index)
        metrics = dict(
            psnr=psnr(out.rgb, image, mask),
            ssim=ssim(out.rgb, image, mask),
            feature_l1=l1(decoded, target, mask),
            feature_cosine=cosine_similarity(decoded, target, mask),
        )
        return metrics, out, decoded, target

    return evaluate
