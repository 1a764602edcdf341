"""Frozen feature extraction and the paper's feature assemblies (Sec. 4.6, Table 13).

original   the original model's tokens (D channels)
finetuned  the fine-tuned model's tokens (D)
concat     original ++ fine-tuned (2D), the paper's default
add        original + fine-tuned (D)
fusion     original ++ fine-tuned, then a learned linear map to D inside the head
duplicate  original ++ original (2D): the control that shows concatenation's gain is not width

Which tokens (the protocol's ``features``, ``Backbones.tokens``):
fit3d   as FiT3D's evaluation takes them (``linear_evaluate_fit3d.py``, ``eval_utils/misc.py``): the
        last block's patch tokens after the final LayerNorm for segmentation; for depth the
        un-normalised last block, with the un-normalised CLS of the first model only (the original's:
        FiT3D drops the fine-tuned model's CLS), so concat gives 2D + D channels
dinov2  final-norm tokens for both tasks, with the CLS tokens assembled like the patches (2D + 2D)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fit3d_jax.models.dinov2 import DinoV2
from fit3d_jax.probe.datasets.types import DEPTH, TASKS

ASSEMBLIES = ("original", "finetuned", "concat", "add", "fusion", "duplicate")
NEEDS_FINETUNED = ("finetuned", "concat", "add", "fusion")
FEATURES = ("fit3d", "dinov2")


@dataclasses.dataclass(frozen=True)
class Backbones:
    """The frozen model(s) behind a probe; parameters are passed to ``features`` as arguments so
    that jitted callers do not bake them in as constants."""

    model: DinoV2
    assembly: str
    task: str  # segmentation | depth: which tokens tokens="fit3d" takes
    tokens: str = "fit3d"  # FEATURES: the protocol's ``features`` choice

    def __post_init__(self):
        if self.assembly not in ASSEMBLIES:
            raise ValueError(f"assembly {self.assembly!r} is not one of {ASSEMBLIES}")
        if self.tokens not in FEATURES:
            raise ValueError(f"features {self.tokens!r} is not one of {FEATURES}")
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")

    @property
    def raw_tokens(self) -> bool:
        """Un-normalised last-block tokens and the first model's CLS alone (FiT3D's depth)."""
        return self.task == DEPTH and self.tokens == "fit3d"

    @property
    def needs_finetuned(self) -> bool:
        return self.assembly in NEEDS_FINETUNED

    @property
    def feature_dim(self) -> int:
        d = self.model.config.embed_dim
        return d if self.assembly in ("original", "finetuned", "add") else 2 * d

    @property
    def cls_dim(self) -> int:
        return self.model.config.embed_dim if self.raw_tokens else self.feature_dim

    @property
    def fusion_features(self) -> int | None:
        return self.model.config.embed_dim if self.assembly == "fusion" else None

    @property
    def models(self) -> tuple[str, ...]:
        """The frozen models this assembly reads: "original", "finetuned" or both."""
        return models_for([self.assembly])

    def run(self, p: dict, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One model's (patch tokens, CLS) as this task's tokens take them, in the compute dtype."""
        if self.raw_tokens:
            ((patches, cls),) = self.model.apply({"params": p}, images, n=1, reshape=True, return_class_token=True, norm=False,
                                                 method=DinoV2.get_intermediate_layers)
            return patches, cls
        out = self.model.apply({"params": p}, images)
        return out.patch_tokens, out.cls_token

    def outputs(self, params: dict, images: jax.Array, models: tuple[str, ...] | None = None) -> dict:
        """Each of ``models`` (default: this assembly's) run once: {name: (tokens, CLS)}, in the
        compute dtype. Heads of several assemblies share one such pass (``models_for``)."""
        return {name: self.run(params[name], images) for name in models or self.models}

    def assemble(self, outputs: dict) -> tuple[jax.Array, jax.Array]:
        """This assembly's tokens (B, h, w, C) and CLS (B, C'), float32 with no gradient, from ``outputs``."""
        first, second = outputs.get("original"), outputs.get("finetuned")
        if self.assembly == "finetuned":
            first = None
        elif not self.needs_finetuned:
            second = None
        combine = {
            "original": lambda a, b: a,
            "finetuned": lambda a, b: b,
            "add": lambda a, b: a + b,
            "duplicate": lambda a, b: jnp.concatenate([a, a], -1),
        }.get(self.assembly, lambda a, b: jnp.concatenate([a, b], -1))
        tokens = combine(*(None if m is None else m[0] for m in (first, second)))
        if self.raw_tokens:
            cls = (first or second)[1]
        else:
            cls = combine(*(None if m is None else m[1] for m in (first, second)))
        return jax.lax.stop_gradient(tokens.astype(jnp.float32)), jax.lax.stop_gradient(cls.astype(jnp.float32))

    def features(self, params: dict, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``params`` = {"original": ..., "finetuned": ... (where needed)}; images (B, H, W, 3)
        normalised, multiples of the patch size. Returns ``assemble(outputs(params, images))``."""
        return self.assemble(self.outputs(params, images))


def models_for(assemblies) -> tuple[str, ...]:
    """The frozen models a set of assemblies reads, in a fixed order."""
    return tuple(name for name, needed in (("original", any(a != "finetuned" for a in assemblies)),
                                          ("finetuned", any(a in NEEDS_FINETUNED for a in assemblies))) if needed)
