"""The authors' densification: 3DGS adaptive density control with its thresholds and schedule.

Every ``densify_every`` iterations in (densify_from, densify_until): Gaussians whose mean view-space
gradient reaches ``densify_grad_threshold`` are cloned (small) or split (large), then pruned for low
opacity and, after ``size_prune_from``, for a large screen radius or world size. Opacities are reset
every ``opacity_reset_every`` iterations. Statistics accumulate only before ``densify_until``; at
that iteration the Gaussians are final, and the free slots are dropped when they are a quarter or
more of the buffers (one re-trace that the rest of the run repays).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from fit3d_jax.lift.state import compact_state, resize_state
from fit3d_jax.lift.strategy import ops


@dataclasses.dataclass(frozen=True)
class DefaultStrategy:
    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    densify_grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    min_opacity: float = 0.005
    opacity_reset_every: int = 3000  # 0 disables the reset
    max_screen_size: float = 20.0  # pixels; pruning by size starts after size_prune_from
    size_prune_from: int = 3000  # 3DGS: after the first opacity reset

    def __post_init__(self):
        if self.densify_until < self.densify_from:
            raise ValueError(f"densify_until={self.densify_until} is below densify_from={self.densify_from}: nothing would densify")

    def init(self, capacity: int) -> ops.DensityStats:
        return ops.DensityStats.zeros(capacity)

    def accumulate(self, stats, iteration, screen_grad, radii, width: int, height: int) -> ops.DensityStats:
        new = ops.accumulate(stats, screen_grad, radii, width, height)
        return jax.tree.map(lambda n, o: jnp.where(iteration < self.densify_until, n, o), new, stats)

    def _schedule(self, it: int, total: int) -> tuple[bool, bool, bool]:
        """What follows iteration ``it``: (densify and prune, opacity reset, compaction)."""
        densify = self.densify_from < it < self.densify_until and it % self.densify_every == 0
        reset = bool(self.opacity_reset_every) and it % self.opacity_reset_every == 0 and it < total
        compaction = it == self.densify_until < total
        return densify, reset, compaction

    def due(self, iteration: int, total: int) -> bool:
        return any(self._schedule(iteration, total))

    def apply(self, state, iteration: int, total: int, extent: float, key):
        """Grows the capacity (a re-trace) when free slots run out, densifies and prunes, resets
        opacities, and compacts, as the schedule says for ``iteration``."""
        densify, reset, compaction = self._schedule(iteration, total)
        if densify:
            plan = ops.plan(state.gaussians, state.active, state.stats, self.densify_grad_threshold, self.percent_dense, extent)
            needed, free = int(plan.needed), int(plan.free)
            if needed > free:
                active = int(state.active.sum())
                state = resize_state(state, 1 << max(14, math.ceil(math.log2(1.5 * (active + needed)))))
                plan = ops.plan(state.gaussians, state.active, state.stats, self.densify_grad_threshold, self.percent_dense, extent)
            max_screen = self.max_screen_size if iteration > self.size_prune_from else 0.0
            gaussians, active, opt_state, stats = ops.densify_and_prune(
                state.gaussians, state.active, state.stats, state.opt_state, plan,
                jax.random.fold_in(key, iteration), self.min_opacity, extent, max_screen,
            )
            state = state.replace(gaussians=gaussians, active=active, opt_state=opt_state, stats=stats)
        if reset:
            gaussians, opt_state = ops.reset_opacity(state.gaussians, state.opt_state)
            state = state.replace(gaussians=gaussians, opt_state=opt_state)
        if compaction and int(state.active.sum()) <= 0.75 * state.capacity:
            state = compact_state(state)
        return state
