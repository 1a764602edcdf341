"""Probe losses: cross-entropy with an ignore index (segmentation); the scale-invariant log loss
(SigLoss), the multi-scale gradient loss and the plain bin classification loss (depth).

SigLoss and the gradient loss follow FiT3D's depth toolbox (``evaluation/depth/models/losses``):
eps 1e-3, valid = gt > 0 (and <= max depth), pooled over the images of one GPU; SigLoss uses only
the mean term for its first 100 calls ("warm-up") and torch's unbiased variance after. The toolbox
applies its gradient loss to (B, 1, H, W) tensors, where the slicing lands on the batch and channel
axes (identically zero at 2 images per GPU); here it is applied over each image's height and width,
as intended, and only where the protocol asks for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fit3d_jax.probe.metrics import IGNORE_INDEX

SIG_EPS = 1e-3
SIG_LAMBDA = 0.15


def segmentation_cross_entropy(logits: jax.Array, labels: jax.Array, all_pixels: bool = True) -> jax.Array:
    """Softmax cross-entropy summed over pixels whose label is not IGNORE_INDEX, divided by every
    pixel (``all_pixels``: mmseg 0.27's default, ``avg_non_ignore=False``) or by the labelled ones
    (0 if none)."""
    return masked_cross_entropy(logits, labels, labels != IGNORE_INDEX, all_pixels)


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, valid: jax.Array, all_pixels: bool = False) -> jax.Array:
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    logits = logits.astype(jnp.float32)
    # logsumexp minus the label's logit, picked by a compare: forward and backward stay elementwise
    # and reductions over classes, which XLA fuses (log_softmax and a gather would write out, and
    # scatter into, full-resolution class maps)
    picked = jnp.sum(jnp.where(jnp.arange(logits.shape[-1]) == safe[..., None], logits, 0.0), axis=-1)
    nll = jax.nn.logsumexp(logits, axis=-1) - picked
    count = valid.size if all_pixels else jnp.maximum(jnp.sum(valid), 1)
    return jnp.sum(jnp.where(valid, nll, 0.0)) / count


def depth_valid(gt: jax.Array, max_depth: float | None) -> jax.Array:
    valid = gt > 0
    return valid & (gt <= max_depth) if max_depth is not None else valid


def sig_loss(prediction: jax.Array, gt: jax.Array, valid: jax.Array, warm_up: jax.Array | bool) -> jax.Array:
    """sqrt(var(g) + 0.15 mean(g)^2) with g = log(pred + eps) - log(gt + eps) over valid pixels;
    during warm-up sqrt(0.15 mean(g)^2)."""
    g = jnp.log(prediction + SIG_EPS) - jnp.log(jnp.where(valid, gt, 1.0) + SIG_EPS)
    n = jnp.maximum(jnp.sum(valid), 2).astype(jnp.float32)
    mean = jnp.sum(jnp.where(valid, g, 0.0)) / n
    var = jnp.sum(jnp.where(valid, (g - mean) ** 2, 0.0)) / (n - 1)
    mean_term = SIG_LAMBDA * mean**2
    return jnp.sqrt(jnp.where(warm_up, mean_term, var + mean_term) + 1e-12)


def grouped_sig_loss(prediction: jax.Array, gt: jax.Array, valid: jax.Array, warm_up: jax.Array | bool, group: int) -> jax.Array:
    """The mean of ``sig_loss`` over consecutive groups of ``group`` images of the (B, H, W) batch
    (FiT3D: one SigLoss per GPU over its images, gradients averaged over GPUs); 0 or B = one pool."""
    batch = prediction.shape[0]
    if group in (0, batch):
        return sig_loss(prediction, gt, valid, warm_up)
    if batch % group:
        raise ValueError(f"protocol.depth_loss_group={group} does not divide the batch of {batch}")
    split = lambda x: x.reshape(batch // group, group, *x.shape[1:])
    return jnp.mean(jax.vmap(sig_loss, in_axes=(0, 0, 0, None))(split(prediction), split(gt), split(valid), warm_up))


def _gradient_term(prediction: jax.Array, gt: jax.Array, valid: jax.Array) -> jax.Array:
    """Masked |d(log-ratio)| with step-2 differences along H and W, summed, over valid count."""
    d = jnp.log(prediction + SIG_EPS) - jnp.log(jnp.where(valid, gt, 1.0) + SIG_EPS)
    d = jnp.where(valid, d, 0.0)
    total = jnp.zeros((), jnp.float32)
    for axis in (1, 2):
        n = d.shape[axis]
        head = jax.lax.slice_in_dim(d, 0, n - 2, axis=axis)
        tail = jax.lax.slice_in_dim(d, 2, n, axis=axis)
        both = jax.lax.slice_in_dim(valid, 0, n - 2, axis=axis) & jax.lax.slice_in_dim(valid, 2, n, axis=axis)
        total += jnp.sum(jnp.where(both, jnp.abs(head - tail), 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def gradient_loss(prediction: jax.Array, gt: jax.Array, valid: jax.Array) -> jax.Array:
    """The gradient term at scales 1, 1/2, 1/4, 1/6 (strided subsampling), summed. (B, H, W) inputs."""
    return sum(
        _gradient_term(prediction[:, ::s, ::s], gt[:, ::s, ::s], valid[:, ::s, ::s]) for s in (1, 2, 4, 6)
    )


def bin_classification_loss(bin_logits: jax.Array, gt: jax.Array, valid: jax.Array, min_depth: float, max_depth: float) -> jax.Array:
    """The paper's plain loss: cross-entropy of the (B, H, W, K) bin scores against the index of the
    bin nearest to the ground truth, over valid pixels."""
    num_bins = bin_logits.shape[-1]
    centers = jnp.linspace(min_depth, max_depth, num_bins)
    target = jnp.clip(jnp.round((gt - min_depth) / (centers[1] - centers[0])), 0, num_bins - 1)
    return masked_cross_entropy(bin_logits, target, valid)
