"""The 2D models one lift distils into one set of Gaussians.

FiT3D lifts every scene once per backbone, but its geometry never sees the features: the feature
loss reaches only the per-Gaussian features and the decoder, densification statistics come from
the colour loss, and the view order is a function of the seed. So K backbones share one geometry
here. Each has its own slice of F feature channels per Gaussian, its own decoder, targets (at its
patch size), metrics and outputs; the geometry's trajectory is the one a single-backbone lift
takes.

A single backbone has the name '' and writes today's layout; named backbones write their outputs
under their names (``folder``) and log under them (``key``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from fit3d_jax.errors import FitError
from fit3d_jax.weights import LoadedWeights

# Names a backbone cannot take: the scene folder's own entries.
RESERVED = frozenset({"cache", "checkpoints", "renders", "store"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


class BackboneError(FitError, ValueError):
    """A set of backbones that cannot be lifted together (the message names the backbone)."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str  # '' = the one unnamed backbone (today's layout)
    weights: LoadedWeights

    @property
    def dim(self) -> int:
        return self.weights.config.embed_dim

    def folder(self, base: Path) -> Path:
        """Where this backbone's outputs go below ``base``."""
        return Path(base) / self.name if self.name else Path(base)

    def key(self, metric: str) -> str:
        """A metric's key in logs and metrics.json: ``<name>/<metric>``, or the bare metric."""
        return f"{self.name}/{metric}" if self.name else metric


def as_backbones(models: LoadedWeights | Sequence[Backbone]) -> tuple[Backbone, ...]:
    """One unnamed backbone from weights, or the given ones checked: at least one; names distinct
    folder names, not reserved, and only a single backbone may go unnamed."""
    if isinstance(models, LoadedWeights):
        return (Backbone("", models),)
    backbones = tuple(models)
    if not backbones:
        raise BackboneError("no backbones to lift")
    for b in backbones:
        if len(backbones) > 1 or b.name:
            if not _NAME.fullmatch(b.name):
                raise BackboneError(f"backbone name {b.name!r}: use letters, digits, '_', '.', '+' or '-', starting with a letter or digit")
            if b.name in RESERVED:
                raise BackboneError(f"backbone name {b.name!r} is reserved (the scene folder's {sorted(RESERVED)})")
    names = [b.name for b in backbones]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BackboneError(f"backbone names {repeated} are given more than once")
    return backbones


def identity(backbones: Sequence[Backbone]) -> list[dict]:
    """What a lift's checkpoints record of its backbones: names and the weights' content."""
    return [{"name": b.name, "weights": b.weights.fingerprint} for b in backbones]
