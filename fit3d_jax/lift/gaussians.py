"""Feature Gaussians of one scene as fixed-capacity parameter buffers with an active mask.

Densification adds and removes Gaussians by flipping slots of the mask, so array shapes (and the
jitted training step) stay the same; only when the free slots run out does the capacity grow
(a rare re-trace), and once densification ends the free slots are dropped. Parameters are
stored raw, as the authors optimise them: log-scales, unnormalised quaternions, opacity logits,
SH DC and rest separately, features.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from scipy.spatial import cKDTree

from fit3d_jax.render.reference import SH_C0

SH_REST = 15  # degree-3 SH coefficients beyond the DC term


@struct.dataclass
class Gaussians:
    means: jnp.ndarray  # (M, 3)
    log_scales: jnp.ndarray  # (M, 3)
    quats: jnp.ndarray  # (M, 4) w x y z
    opacity_logits: jnp.ndarray  # (M,)
    sh_dc: jnp.ndarray  # (M, 1, 3)
    sh_rest: jnp.ndarray  # (M, 15, 3)
    features: jnp.ndarray  # (M, F)

    @property
    def capacity(self) -> int:
        return self.means.shape[0]


def inverse_sigmoid(x):
    return np.log(x / (1.0 - x))


def init_from_points(points: np.ndarray, colors: np.ndarray, feature_dim: int, capacity: int) -> tuple[Gaussians, np.ndarray]:
    """3DGS initialisation from sparse points: isotropic scale from the mean squared distance to
    the 3 nearest neighbours, identity rotation, opacity 0.1, colour as the SH DC term, features 0.

    Returns the Gaussians (capacity slots) and the active mask.
    """
    chex.assert_rank(points, 2)
    n = len(points)
    if n == 0:
        raise ValueError("no sparse points to initialise the Gaussians from")
    if capacity < n:
        raise ValueError(f"capacity {capacity} is smaller than the {n} initial points")
    k = min(4, n)  # the point itself + 3 neighbours
    dist, _ = cKDTree(points).query(points, k=k)
    mean_sq = np.mean(dist[:, 1:] ** 2, axis=1) if k > 1 else np.ones(n)
    log_scale = np.log(np.sqrt(np.maximum(mean_sq, 1e-7)))

    def slots(values, fill=0.0):
        out = np.full((capacity,) + values.shape[1:], fill, np.float32)
        out[:n] = values
        return jnp.asarray(out)

    rgb = colors.astype(np.float64) / 255.0
    gaussians = Gaussians(
        means=slots(points),
        log_scales=slots(np.repeat(log_scale[:, None], 3, axis=1)),
        quats=slots(np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)), fill=0.0).at[n:, 0].set(1.0),
        opacity_logits=slots(np.full(n, inverse_sigmoid(0.1))),
        sh_dc=slots(((rgb - 0.5) / SH_C0)[:, None, :]),
        sh_rest=slots(np.zeros((n, SH_REST, 3))),
        features=slots(np.zeros((n, feature_dim))),
    )
    active = np.zeros(capacity, bool)
    active[:n] = True
    return gaussians, active


def activated(g: Gaussians, active: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """Rasterizer inputs: means, scales, quats, opacities (0 for free slots), SH (M, 16, 3),
    features."""
    opacities = jax.nn.sigmoid(g.opacity_logits) * active
    sh = jnp.concatenate([g.sh_dc, g.sh_rest], axis=1)
    return g.means, jnp.exp(g.log_scales), g.quats, opacities, sh, g.features


def _per_slot(tree, old: int, fn):
    """Applies ``fn`` to every array leaf whose leading dimension is ``old`` (the current
    capacity): parameters, optimiser moments, density statistics and the active mask alike."""
    return jax.tree.map(lambda x: fn(x) if hasattr(x, "shape") and x.ndim and x.shape[0] == old else x, tree)


def resize(tree, old: int, capacity: int):
    """``capacity`` slots: more are padded with free slots (zero, quaternions kept valid); fewer
    keep the first ``capacity`` (restore templates; ``compact`` keeps the active ones)."""

    def fit(x):
        if capacity <= old:
            return x[:capacity]
        return jnp.concatenate([x, jnp.zeros((capacity - old,) + x.shape[1:], x.dtype)], axis=0)

    resized = _per_slot(tree, old, fit)
    if isinstance(resized, Gaussians) and capacity > old:
        resized = resized.replace(quats=resized.quats.at[old:, 0].set(1.0))
    return resized


def compact(tree, active: np.ndarray, capacity: int):
    """``capacity`` slots holding the active ones first, in their order (the rasterizer breaks
    depth ties by index, so renders do not change), gathered in one pass."""
    active = np.asarray(active, bool)
    if not int(active.sum()) <= capacity <= len(active):
        raise ValueError(f"cannot compact {int(active.sum())} active of {len(active)} slots into {capacity}")
    order = jnp.asarray(np.argsort(~active, kind="stable")[:capacity])
    return _per_slot(tree, len(active), lambda x: x[order])
