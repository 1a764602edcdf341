"""The densification strategy protocol (after gsplat's ``strategy/``): how the set of Gaussians
changes during a lift, apart from the optimisation itself.

A strategy keeps per-Gaussian statistics in the lift state (``init``), adds to them inside the
jitted step (``accumulate``), says on the host after which iterations it acts (``due``), and acts
there (``apply``) on the fixed-capacity buffers, growing or compacting them where it must. A new
strategy is one new module with a class of these four methods, registered in ``STRATEGIES``.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax


class Strategy(Protocol):
    def init(self, capacity: int) -> Any:
        """Statistics for ``capacity`` slots (a pytree whose leaves have leading dimension capacity)."""

    def accumulate(self, stats: Any, iteration: jax.Array, screen_grad: jax.Array, radii: jax.Array, width: int,
                   height: int) -> Any:
        """Inside the step (traced): ``screen_grad`` is dL/d(means2d) in pixels (N, 2)."""

    def due(self, iteration: int, total: int) -> bool:
        """On the host: whether ``apply`` runs after ``iteration``."""

    def apply(self, state: Any, iteration: int, total: int, extent: float, key: jax.Array) -> Any:
        """On the host, after ``iteration``: the lift state with the Gaussians changed."""
