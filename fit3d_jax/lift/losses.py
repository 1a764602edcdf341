"""Image losses and metrics of the lifting stage, with validity masks ((H, W) weights in [0, 1])."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.render.decode import decode, decode_input_grad, decode_kernel_grad

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean of (H, W, C) values over valid pixels and all channels."""
    weight = jnp.broadcast_to(mask[..., None], x.shape)
    return jnp.sum(x * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def l1(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    return masked_mean(jnp.abs(pred - target), mask)


def _gaussian_blur(x: jnp.ndarray) -> jnp.ndarray:
    """Separable 11-tap Gaussian (sigma 1.5) per channel with zero padding, like 3DGS's SSIM."""
    t = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
    taps = np.exp(-(t**2) / (2 * SSIM_SIGMA**2))
    taps = jnp.asarray(taps / taps.sum(), x.dtype)
    c = x.shape[-1]
    out = x[None]
    for kernel_shape in ((SSIM_WINDOW, 1, 1, c), (1, SSIM_WINDOW, 1, c)):
        kernel = jnp.broadcast_to(taps.reshape(kernel_shape[:2] + (1, 1)), kernel_shape)
        out = jax.lax.conv_general_dilated(
            out, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c,
            precision=jax.lax.Precision.HIGHEST,
        )
    return out[0]


def ssim_map(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """(H, W, C) structural similarity of images in [0, 1]."""
    mu_p, mu_t = _gaussian_blur(pred), _gaussian_blur(target)
    var_p = _gaussian_blur(pred * pred) - mu_p**2
    var_t = _gaussian_blur(target * target) - mu_t**2
    cov = _gaussian_blur(pred * target) - mu_p * mu_t
    num = (2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_p**2 + mu_t**2 + SSIM_C1) * (var_p + var_t + SSIM_C2)
    return num / den


def ssim(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    return masked_mean(ssim_map(pred, target), mask)


def psnr(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    mse = masked_mean((pred - target) ** 2, mask)
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))


def cosine_similarity(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Mean over valid pixels of the cosine between (H, W, C) feature vectors."""
    dot = jnp.sum(pred * target, axis=-1)
    norms = jnp.linalg.norm(pred, axis=-1) * jnp.linalg.norm(target, axis=-1)
    cos = dot / jnp.maximum(norms, 1e-8)
    return jnp.sum(cos * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def decoded_l1(features: jnp.ndarray, kernel: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
    """``l1(decode(features, kernel), target, mask)``: the feature loss of stage I, differentiable
    in the features and the decoder kernel (the target and mask are data).

    The decoder's three convolutions (forward and the two of the backward) take ``dtype``
    operands and accumulate in float32. The backward's cotangent is sign(decoded - target) x mask,
    exact in bfloat16 for 0/1 masks, with the mean's scale applied after, so bfloat16 rounds only
    the features and the kernel."""
    return _decoded_l1_forward(features, kernel, target, mask, dtype)[0]


def _decoded_l1_forward(features, kernel, target, mask, dtype):
    decoded = decode(features, kernel, dtype)
    diff = decoded - target
    count = jnp.maximum(jnp.sum(mask) * decoded.shape[-1], 1.0)
    signs = (jnp.sign(diff) * mask[..., None]).astype(dtype)
    loss = jnp.sum(jnp.abs(diff) * mask[..., None]) / count
    return loss, (features, kernel, signs, count)


def _decoded_l1_backward(dtype, residuals, cotangent):
    features, kernel, signs, count = residuals
    scale = cotangent / count
    return ((decode_input_grad(signs, kernel.astype(dtype)) * scale).astype(features.dtype),
            (decode_kernel_grad(features.astype(dtype), signs) * scale).astype(kernel.dtype), None, None)


decoded_l1.defvjp(_decoded_l1_forward, _decoded_l1_backward)
