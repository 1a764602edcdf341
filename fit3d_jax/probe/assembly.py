"""Frozen feature extraction and the paper's feature assemblies (Sec. 4.6, Table 13).

original   the original model's tokens (D channels)
finetuned  the fine-tuned model's tokens (D)
concat     original ++ fine-tuned (2D), the paper's default
add        original + fine-tuned (D)
fusion     original ++ fine-tuned, then a learned linear map to D inside the head
duplicate  original ++ original (2D): the control that shows concatenation's gain is not width
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fit3d_jax.models.dinov2 import DinoV2

ASSEMBLIES = ("original", "finetuned", "concat", "add", "fusion", "duplicate")
NEEDS_FINETUNED = ("finetuned", "concat", "add", "fusion")


@dataclasses.dataclass(frozen=True)
class Backbones:
    """The frozen model(s) behind a probe; parameters are passed to ``features`` as arguments so
    that jitted callers do not bake them in as constants."""

    model: DinoV2
    assembly: str

    def __post_init__(self):
        if self.assembly not in ASSEMBLIES:
            raise ValueError(f"assembly {self.assembly!r} is not one of {ASSEMBLIES}")

    @property
    def needs_finetuned(self) -> bool:
        return self.assembly in NEEDS_FINETUNED

    @property
    def feature_dim(self) -> int:
        d = self.model.config.embed_dim
        return d if self.assembly in ("original", "finetuned", "add") else 2 * d

    @property
    def fusion_features(self) -> int | None:
        return self.model.config.embed_dim if self.assembly == "fusion" else None

    def features(self, params: dict, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``params`` = {"original": ..., "finetuned": ... (where needed)}; images (B, H, W, 3)
        normalised, multiples of the patch size. Returns tokens (B, h, w, C) and CLS (B, C), float32,
        with no gradient."""
        run = lambda p: self.model.apply({"params": p}, images)
        first = run(params["original"]) if self.assembly != "finetuned" else None
        second = run(params["finetuned"]) if self.needs_finetuned else None
        pick = {
            "original": lambda: (first.patch_tokens, first.cls_token),
            "finetuned": lambda: (second.patch_tokens, second.cls_token),
            "add": lambda: (first.patch_tokens + second.patch_tokens, first.cls_token + second.cls_token),
            "duplicate": lambda: (jnp.concatenate([first.patch_tokens] * 2, -1), jnp.concatenate([first.cls_token] * 2, -1)),
        }
        both = lambda: (jnp.concatenate([first.patch_tokens, second.patch_tokens], -1),
                        jnp.concatenate([first.cls_token, second.cls_token], -1))
        tokens, cls = pick.get(self.assembly, both)()
        return jax.lax.stop_gradient(tokens.astype(jnp.float32)), jax.lax.stop_gradient(cls.astype(jnp.float32))
