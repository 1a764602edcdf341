"""Adaptive density control (3DGS): statistics, clone/split/prune and opacity reset, on
fixed-capacity buffers so that they run jitted without changing any shape.

Semantics follow 3DGS: the view-space gradient is measured in NDC units (the pixel gradient times
(W/2, H/2)); its norm is averaged over the iterations in which a Gaussian was visible. Gaussians
whose average reaches the threshold are cloned when small (max scale <= percent_dense x extent)
and split in two when large (new means sampled from the Gaussian, scales / 1.6, the original
removed). Then Gaussians are pruned for low opacity and, late in training, for a large screen
radius or world size. New and changed slots start with zero optimiser moments, as new tensors do in
the authors' optimiser.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from fit3d_jax.lift.gaussians import Gaussians, inverse_sigmoid
from fit3d_jax.render.reference import quat_to_rotmat


@struct.dataclass
class DensityStats:
    grad_sum: jnp.ndarray  # (M,) sum of view-space gradient norms while visible
    visible_count: jnp.ndarray  # (M,)
    max_radius: jnp.ndarray  # (M,) largest screen radius seen (pixels)

    @classmethod
    def zeros(cls, capacity: int) -> DensityStats:
        # Three distinct buffers: the training step donates its state.
        return cls(*(jnp.zeros(capacity, jnp.float32) for _ in range(3)))


def accumulate(stats: DensityStats, screen_grad: jnp.ndarray, radii: jnp.ndarray, width: int, height: int) -> DensityStats:
    """Adds one iteration: ``screen_grad`` is dL/d(means2d) in pixels (N, 2)."""
    visible = radii > 0
    ndc = screen_grad * jnp.array([width / 2.0, height / 2.0])
    norm = jnp.linalg.norm(ndc, axis=-1)
    return DensityStats(
        grad_sum=stats.grad_sum + jnp.where(visible, norm, 0.0),
        visible_count=stats.visible_count + visible,
        max_radius=jnp.where(visible, jnp.maximum(stats.max_radius, radii), stats.max_radius),
    )


class DensifyPlan(struct.PyTreeNode):
    """Which slots densification would clone/split, and whether the free slots suffice."""

    clone: jnp.ndarray
    split: jnp.ndarray
    needed: jnp.ndarray  # free slots needed (clones + one per split)
    free: jnp.ndarray


@jax.jit
def plan(g: Gaussians, active: jnp.ndarray, stats: DensityStats, grad_threshold, percent_dense, extent) -> DensifyPlan:
    grads = jnp.where(stats.visible_count > 0, stats.grad_sum / jnp.maximum(stats.visible_count, 1), 0.0)
    big = active & (grads >= grad_threshold)
    max_scale = jnp.max(jnp.exp(g.log_scales), axis=-1)
    clone = big & (max_scale <= percent_dense * extent)
    split = big & (max_scale > percent_dense * extent)
    return DensifyPlan(clone, split, clone.sum() + split.sum(), (~active).sum())


@jax.jit
def densify_and_prune(
    g: Gaussians,
    active: jnp.ndarray,
    stats: DensityStats,
    moments,
    p: DensifyPlan,
    key: jax.Array,
    min_opacity,
    extent,
    max_screen_size,
):
    """Applies a plan whose ``needed <= free`` (the caller grows capacity first). ``moments`` are
    optimiser-state trees with per-Gaussian leaves (leading dimension M), zeroed where slots
    change. ``max_screen_size <= 0`` disables the size-based pruning. Returns (g, active,
    moments, reset stats)."""
    m = g.capacity
    # New Gaussians go to free slots: the k-th source (clone or split) fills the k-th free slot.
    sources = jnp.nonzero(p.clone | p.split, size=m, fill_value=m)[0]
    free = jnp.nonzero(~active, size=m, fill_value=m)[0]
    is_new = sources < m
    dest = jnp.where(is_new & (free < m), free, m)  # out-of-range index: dropped by the scatter
    src = jnp.minimum(sources, m - 1)

    # Split: two samples from N(mean, Sigma); the first replaces the original, the second is new.
    scales = jnp.exp(g.log_scales)
    rot = quat_to_rotmat(g.quats)
    noise = jax.random.normal(key, (2, m, 3)) * scales[None]
    samples = g.means[None] + jnp.einsum("mij,kmj->kmi", rot, noise, precision="highest")
    shrink = jnp.log(1.6)  # scales / (0.8 * 2)
    split_log_scales = jnp.where(p.split[:, None], g.log_scales - shrink, g.log_scales)
    means = jnp.where(p.split[:, None], samples[0], g.means)

    def scatter(x, values):
        return x.at[dest].set(values[src], mode="drop")

    new_means = jnp.where(p.split[src][:, None], samples[1][src], g.means[src])
    g = g.replace(
        means=means.at[dest].set(new_means, mode="drop"),
        log_scales=scatter(split_log_scales, split_log_scales),
        quats=scatter(g.quats, g.quats),
        opacity_logits=scatter(g.opacity_logits, g.opacity_logits),
        sh_dc=scatter(g.sh_dc, g.sh_dc),
        sh_rest=scatter(g.sh_rest, g.sh_rest),
        features=scatter(g.features, g.features),
    )
    changed = p.split.at[dest].set(True, mode="drop")  # new Gaussians, as for fresh tensors in 3DGS
    active = active.at[dest].set(True, mode="drop")
    max_radius = jnp.where(changed, 0.0, stats.max_radius)

    prune = active & (jax.nn.sigmoid(g.opacity_logits) < min_opacity)
    too_big = (max_radius > max_screen_size) | (jnp.max(jnp.exp(g.log_scales), axis=-1) > 0.1 * extent)
    prune |= active & (max_screen_size > 0) & too_big
    active &= ~prune
    moments = zero_slots(moments, changed | prune, m)
    return g, active, moments, DensityStats.zeros(m)


def zero_slots(moments, slots: jnp.ndarray, capacity: int):
    """Zeroes the per-Gaussian rows ``slots`` of every leaf with leading dimension ``capacity``."""

    def zero(x):
        if not hasattr(x, "ndim") or x.ndim == 0 or x.shape[0] != capacity:
            return x
        return jnp.where(slots.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.zeros_like(x), x)

    return jax.tree.map(zero, moments)


def zero_field(opt_state, field: str):
    """Zeroes the optimiser moments of one Gaussian field (e.g. after the opacity reset, whose
    parameters the authors replace together with their Adam state)."""

    def zero(path, x):
        named = any(getattr(k, "name", None) == field for k in path)
        return jnp.zeros_like(x) if named and hasattr(x, "ndim") and x.ndim > 0 else x

    return jax.tree_util.tree_map_with_path(zero, opt_state)


@jax.jit
def reset_opacity(g: Gaussians, opt_state):
    """Opacities above 0.01 are set to 0.01 and their Adam moments restart from zero."""
    ceiling = jnp.float32(inverse_sigmoid(0.01))
    return g.replace(opacity_logits=jnp.minimum(g.opacity_logits, ceiling)), zero_field(opt_state, "opacity_logits")
