"""Densification strategies, picked by name (``config.strategy.name``) with their fields beside it:
``default`` is the authors' 3DGS adaptive density control. See ``base`` for the protocol."""

from __future__ import annotations

import dataclasses

from fit3d_jax.lift.strategy.base import Strategy
from fit3d_jax.lift.strategy.default import DefaultStrategy

STRATEGIES = {"default": DefaultStrategy}


def make(name: str, **fields) -> Strategy:
    """The strategy ``name`` with ``fields`` (TypeError / KeyError name what does not fit)."""
    if name not in STRATEGIES:
        raise KeyError(f"strategy {name!r} is not one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](**fields)


def describe(strategy: Strategy) -> dict:
    """Name and fields: what a config holds and a checkpoint's identity records."""
    name = next(n for n, cls in STRATEGIES.items() if isinstance(strategy, cls))
    return {"name": name, **dataclasses.asdict(strategy)}


__all__ = ["STRATEGIES", "DefaultStrategy", "Strategy", "describe", "make"]
