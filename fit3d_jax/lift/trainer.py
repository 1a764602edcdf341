"""Stage I: fit feature Gaussians and scene decoders to one scene's images and the 2D models'
features.

The authors' recipe (../shared/REFERENCE.md, 3DGS defaults): one random training view per
iteration, black background, SH degree +1 every 1000 iterations, loss
0.8 L1 + 0.2 (1 - SSIM) + 1.0 L1(decoded features, targets) over unmasked pixels, feature
gradients to the features and decoder only (the rasterizer routes them), Adam (eps 1e-15) with
per-group learning rates and the means' exponential decay. The densification strategy
(``lift.strategy``) collects its statistics inside the step and acts between steps, on the same
fixed-capacity buffers; the step is jitted once per capacity.

With K backbones (``lift.backbones``) each Gaussian holds K slices of ``feature_dim`` channels,
rendered in the same rasterizer calls as the colour; backbone k's slice, decoder and targets make
its feature loss term, and the K terms add to the colour loss. No term reaches another's
parameters or the geometry, so each backbone trains as it would alone.
"""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from fit3d_jax.harness import guard
from fit3d_jax.lift.backbones import Backbone
from fit3d_jax.lift.gaussians import Gaussians, activated
from fit3d_jax.lift.losses import cosine_similarity, decoded_l1, l1, psnr, ssim
from fit3d_jax.lift.state import LiftState
from fit3d_jax.lift.strategy import Strategy
from fit3d_jax.render import Camera, RenderOutput, rasterize
from fit3d_jax.render.decode import decode
from fit3d_jax.resize import resize_bilinear

# Compute types of the targets' forward and of the decoder's convolutions (float32 accumulation either way).
DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Optimisation settings; defaults are the authors' (3DGS) values for 30k iterations. How the
    set of Gaussians changes is the densification strategy's (``lift.strategy``)."""

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
    # The decoder's convolutions in training: bfloat16 operands on tensor cores (the backward's
    # cotangent, sign x mask, is exact there); float32 as the authors (TF32 on GPUs).
    decoder_dtype: str = "bfloat16"
    target_dtype: str = "bfloat16"  # the 2D models' forward for the targets (float32 residual stream)

    def __post_init__(self):
        for field in ("decoder_dtype", "target_dtype"):
            if getattr(self, field) not in DTYPES:
                raise ValueError(f"{field}={getattr(self, field)!r} is not one of {sorted(DTYPES)}")


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
    targets: tuple[jnp.ndarray, ...]  # per backbone (V, h, w, D) float16 patch tokens
    viewmats: jnp.ndarray  # (V, 4, 4) world-to-camera
    intrinsics: jnp.ndarray  # (V, 4) fx fy cx cy
    width: int = struct.field(pytree_node=False)
    height: int = struct.field(pytree_node=False)

    def camera(self, index) -> Camera:
        return Camera.from_intrinsics(self.viewmats[index], self.intrinsics[index], self.width, self.height)


def scene_extent(camera_centers: np.ndarray) -> float:
    """3DGS's scene extent: 1.1 x the largest distance of a camera centre from their mean."""
    centers = np.asarray(camera_centers, np.float64)
    return float(1.1 * np.max(np.linalg.norm(centers - centers.mean(axis=0), axis=1)))


def gaussian_optimizer(recipe: Recipe, extent: float) -> optax.GradientTransformation:
    means_lr = optax.exponential_decay(recipe.lr_means * extent, recipe.iterations, recipe.lr_means_final / recipe.lr_means,
                                       end_value=recipe.lr_means_final * extent)
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


def init_state(gaussians: Gaussians, active, recipe: Recipe, strategy: Strategy, extent: float, target_dims: tuple[int, ...],
               key) -> LiftState:
    """``gaussians`` hold ``recipe.feature_dim`` channels per decoder of ``target_dims``. Each
    decoder starts from ``key``, as it would in a lift of its backbone alone."""
    chex.assert_shape(gaussians.features, (None, recipe.feature_dim * len(target_dims)))
    decoders = tuple(Decoder(dim).init(key, jnp.zeros((1, 8, 8, recipe.feature_dim)))["params"] for dim in target_dims)
    return LiftState(
        gaussians=gaussians,
        active=jnp.asarray(active),
        stats=strategy.init(gaussians.capacity),
        opt_state=gaussian_optimizer(recipe, extent).init(gaussians),
        decoders=decoders,
        decoder_opt_state=decoder_optimizer(recipe).init(decoders),
        iteration=jnp.int32(0),
        nonfinite=guard.NonFinite.none(),
    )


def render(state: LiftState, data: SceneArrays, index, sh_degree, screen_offset=None) -> RenderOutput:
    """Renders view ``index``: colour and every backbone's feature channels."""
    means, scales, quats, opacities, sh, feats = activated(state.gaussians, state.active)
    return rasterize(means, scales, quats, opacities, sh, feats, data.camera(index), jnp.zeros(3), sh_degree=sh_degree,
                     screen_offset=screen_offset)


def backbone_features(features: jnp.ndarray, k: int, feature_dim: int) -> jnp.ndarray:
    """Backbone ``k``'s channels of a rendered (H, W, K F) feature image."""
    return features[..., k * feature_dim:(k + 1) * feature_dim]


def kernel(decoder) -> jnp.ndarray:
    """A decoder's (3, 3, F, D) convolution kernel."""
    return decoder["Conv_0"]["kernel"]


def upsampled_target(data: SceneArrays, k: int, index) -> jnp.ndarray:
    """Backbone ``k``'s tokens of the view upsampled bilinearly (as torch) to the image (H, W, D):
    two taps per axis, which XLA reads inside the loss's fusion."""
    tokens = data.targets[k][index].astype(jnp.float32)
    return resize_bilinear(tokens[None], (data.height, data.width))[0]


def guarded(backbones: tuple[Backbone, ...]) -> tuple[str, ...]:
    """What the step watches for non-finite values."""
    return ("loss", "l1", "ssim", *(b.key("feature_l1") for b in backbones), "gradients")


def make_train_step(recipe: Recipe, strategy: Strategy, extent: float, backbones: tuple[Backbone, ...]):
    gopt, dopt = gaussian_optimizer(recipe, extent), decoder_optimizer(recipe)
    dtype = DTYPES[recipe.decoder_dtype]
    names = guarded(backbones)

    def step(state: LiftState, data: SceneArrays, index):
        iteration = state.iteration + 1  # 1-based, as the authors count
        sh_degree = jnp.minimum(3, iteration // recipe.sh_every)
        image = data.images[index].astype(jnp.float32) / 255.0
        mask = data.masks[index]

        def loss_fn(gaussians, decoders, offset):
            out = render(state.replace(gaussians=gaussians), data, index, sh_degree, offset)
            rgb_l1 = l1(out.rgb, image, mask)
            rgb_ssim = ssim(out.rgb, image, mask)
            loss = (1 - recipe.lambda_dssim) * rgb_l1 + recipe.lambda_dssim * (1 - rgb_ssim)
            aux = dict(l1=rgb_l1, ssim=rgb_ssim, radii=out.radii, n_isect=out.n_isect)
            for k, (backbone, decoder) in enumerate(zip(backbones, decoders)):
                features = backbone_features(out.features, k, recipe.feature_dim)
                feature_l1 = decoded_l1(features, kernel(decoder), upsampled_target(data, k, index), mask, dtype)
                loss = loss + recipe.lambda_feature * feature_l1
                aux[backbone.key("feature_l1")] = feature_l1
            return loss, aux | {"loss": loss}

        offset = jnp.zeros((state.capacity, 2), jnp.float32)
        grads, aux = jax.grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(state.gaussians, state.decoders, offset)
        g_gauss, g_dec, g_offset = grads
        watched = {**aux, "gradients": guard.all_finite((g_gauss, g_dec))}
        updates, opt_state = gopt.update(g_gauss, state.opt_state, state.gaussians)
        d_updates, decoder_opt_state = dopt.update(g_dec, state.decoder_opt_state, state.decoders)
        stats = strategy.accumulate(state.stats, iteration, g_offset, aux.pop("radii"), data.width, data.height)
        new_state = state.replace(
            gaussians=optax.apply_updates(state.gaussians, updates),
            opt_state=opt_state,
            decoders=optax.apply_updates(state.decoders, d_updates),
            decoder_opt_state=decoder_opt_state,
            stats=stats,
            iteration=iteration,
            nonfinite=state.nonfinite.record(iteration, watched, names),
        )
        return new_state, aux

    return jax.jit(step, donate_argnums=0)


def view_for_iteration(iteration: int, num_views: int, seed: int) -> int:
    """One random training view per iteration: a fresh permutation each pass over the views,
    derived from (seed, pass) so that a resumed run draws the same views."""
    epoch, position = divmod(iteration - 1, num_views)
    return int(np.random.default_rng([seed, epoch]).permutation(num_views)[position])


def make_eval(recipe: Recipe, backbones: tuple[Backbone, ...]):
    """A jitted evaluation of one view: (metrics, render, per backbone (decoded, upsampled target)).
    Decoding is float32, as stage II renders its targets."""

    @jax.jit
    def evaluate(state: LiftState, data: SceneArrays, index):
        out = render(state, data, index, jnp.int32(3))
        image = data.images[index].astype(jnp.float32) / 255.0
        mask = data.masks[index]
        metrics = dict(psnr=psnr(out.rgb, image, mask), ssim=ssim(out.rgb, image, mask))
        pairs = []
        for k, (backbone, decoder) in enumerate(zip(backbones, state.decoders)):
            decoded = decode(backbone_features(out.features, k, recipe.feature_dim), kernel(decoder))
            target = upsampled_target(data, k, index)
            metrics[backbone.key("feature_l1")] = l1(decoded, target, mask)
            metrics[backbone.key("feature_cosine")] = cosine_similarity(decoded, target, mask)
            pairs.append((decoded, target))
        return metrics, out, pairs

    return evaluate
