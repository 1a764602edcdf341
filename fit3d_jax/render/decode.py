"""Rendered feature images decoded to the 2D model's channels: the scene decoder both stages share
(stage I trains it with the Gaussians; stage II renders its targets through it). The decoder is
one 3x3 convolution, zero padding 1, no bias, kernel (3, 3, F, D) in HWIO (Flax's ``nn.Conv``
layout). Its two backward convolutions are written out beside it, so a caller can run all three
on tensor-core operands (``dtype``) with float32 accumulation."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

_PAD = ((1, 1), (1, 1))


def decode(features: jnp.ndarray, kernel: jnp.ndarray, dtype=None) -> jnp.ndarray:
    """(H, W, F) rendered features -> (H, W, D). ``dtype``: the operands' type, accumulated and
    returned in float32 (bfloat16: tensor cores); None computes in the inputs' type, exactly as
    Flax's ``nn.Conv``."""
    chex.assert_rank(features, 3)
    chex.assert_shape(kernel, (3, 3, features.shape[-1], None))
    if dtype is not None:
        features, kernel = features.astype(dtype), kernel.astype(dtype)
    return jax.lax.conv_general_dilated(
        features[None], kernel, (1, 1), _PAD, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=None if dtype is None else jnp.float32,
    )[0]


def decode_input_grad(cotangent: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """(H, W, D) dL/d(decoded) -> (H, W, F) dL/d(features), float32: the convolution with the
    kernel flipped in space and its channels swapped, on the operands' dtype."""
    return jax.lax.conv_general_dilated(
        cotangent[None], kernel[::-1, ::-1], (1, 1), _PAD, dimension_numbers=("NHWC", "HWOI", "NHWC"),
        preferred_element_type=jnp.float32,
    )[0]


def decode_kernel_grad(features: jnp.ndarray, cotangent: jnp.ndarray) -> jnp.ndarray:
    """(H, W, F) features and (H, W, D) dL/d(decoded) -> (3, 3, F, D) dL/d(kernel), float32: the
    correlation of each padded feature channel with each cotangent channel over all pixels."""
    return jax.lax.conv_general_dilated(
        features[None], cotangent[None], (1, 1), _PAD, dimension_numbers=("CHWN", "IHWO", "HWNC"),
        preferred_element_type=jnp.float32,
    )
