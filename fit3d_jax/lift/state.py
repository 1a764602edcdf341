"""The state of a lift and its buffer surgery: Gaussians in fixed-capacity slots with an active
mask, their optimiser state and densification statistics, the decoders, the iteration; growing
the slots (a re-trace) and compacting them once the Gaussians are final."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import struct

from fit3d_jax.harness import guard
from fit3d_jax.lift.gaussians import Gaussians, compact, resize


@struct.dataclass
class LiftState:
    gaussians: Gaussians
    active: jnp.ndarray
    stats: Any  # the densification strategy's statistics (per slot)
    opt_state: Any
    decoders: tuple  # per backbone, the decoder's parameters
    decoder_opt_state: Any
    iteration: jnp.ndarray  # iterations done
    nonfinite: guard.NonFinite  # the first iteration whose loss or gradients were not finite

    @property
    def capacity(self) -> int:
        return self.gaussians.capacity


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
