"""Stopping at the first non-finite loss or parameter without a host sync per step.

The jitted step records, in its state, the first step at which any watched quantity (a loss term,
"all gradients finite", ...) was not finite, and which ones (``NonFinite.record``). The host looks
at the record where it synchronises anyway: when it logs, before it saves a checkpoint, before it
writes results. A run therefore stops naming the exact first step even when that step was not a
logged one, and no checkpoint or result file ever holds what came after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fit3d_jax.errors import RunError


class NonFiniteError(RunError):
    """A loss, gradient or parameter became NaN or infinite."""


def all_finite(tree) -> jnp.ndarray:
    """() bool: every element of every leaf is finite (a norm could overflow; this cannot)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@struct.dataclass
class NonFinite:
    """The first step with a non-finite watched quantity (-1: none yet) and a bit per quantity."""

    step: jnp.ndarray
    which: jnp.ndarray

    @classmethod
    def none(cls) -> NonFinite:
        return cls(jnp.int32(-1), jnp.int32(0))

    def record(self, step, quantities: Mapping[str, jnp.ndarray], names: Sequence[str]) -> NonFinite:
        """Inside the step: ``quantities`` (scalars or bools; ``names`` fixes the bit order)."""
        bad = [~jnp.all(jnp.isfinite(q)) if jnp.issubdtype(jnp.asarray(q).dtype, jnp.inexact) else ~jnp.asarray(q, bool)
               for q in (quantities[n] for n in names)]
        bits = sum(b.astype(jnp.int32) << i for i, b in enumerate(bad))
        first = (self.step < 0) & (bits != 0)
        return NonFinite(jnp.where(first, jnp.int32(step), self.step), jnp.where(first, bits, self.which))


def check(record: NonFinite, names: Sequence[str], where: str) -> None:
    """On the host (a sync): raises NonFiniteError naming the step and the quantities."""
    step, bits = int(record.step), int(record.which)
    if step >= 0:
        bad = [n for i, n in enumerate(names) if bits >> i & 1]
        raise NonFiniteError(f"{where}: {', '.join(bad)} not finite at step {step}; stopped there (no checkpoint or "
                             "result holds anything from that step on). Lower the learning rates or check the inputs.")


def check_tree(tree, where: str, what: str = "parameters") -> None:
    """On the host: raises NonFiniteError naming the first leaf (by its path) that is not finite."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        value = np.asarray(leaf)
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            count = int((~np.isfinite(value)).sum())
            raise NonFiniteError(f"{where}: {what} {jax.tree_util.keystr(path)} hold {count} non-finite value(s)")
