"""Rendered feature images decoded to the 2D model's channels: the scene decoder both stages share
(stage I trains it with the Gaussians; stage II renders its targets through it)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from fit3d_jax.render.camera import Camera
from fit3d_jax.render.rasterize import RenderOutput, rasterize


def decode(features: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """(H, W, F) rendered features -> (H, W, D): the 3x3 convolution, zero padding 1, no bias, with
    ``kernel`` (3, 3, F, D) in HWIO (Flax's ``nn.Conv`` layout and its exact computation)."""
    chex.assert_rank(features, 3)
    chex.assert_shape(kernel, (3, 3, features.shape[-1], None))
    return jax.lax.conv_general_dilated(
        features[None], kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def render_and_decode(means, scales, quats, opacities, sh, features, kernel, camera: Camera, background=None,
                      **rasterize_options) -> tuple[RenderOutput, jnp.ndarray]:
    """Renders the Gaussians (``rasterize``'s arguments and options) and decodes their feature
    image: (RenderOutput, (H, W, D) decoded features)."""
    out = rasterize(means, scales, quats, opacities, sh, features, camera, background, **rasterize_options)
    return out, decode(out.features, kernel)
