"""The linear heads of the DINOv2 evaluation protocol (their ``BNHead`` in "linear" mode).

Both take the assembled token grid (B, h, w, C) of a centre-padded input and return a map at the
unpadded input size. ``resize="stretch"`` (FiT3D, mmseg and the depth toolbox) resizes the padded
grid's output onto the unpadded size, stretching it by less than one patch; ``"crop"`` resizes it
to the padded size and cuts the padding away, so that each output pixel stays under its token.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from fit3d_jax.resize import resize_bilinear


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where an (height, width) input sits inside its centre-padded (padded_h, padded_w) canvas."""

    height: int
    width: int
    padded_height: int
    padded_width: int

    @classmethod
    def for_size(cls, height: int, width: int, patch_size: int) -> Placement:
        up = lambda s: -(-s // patch_size) * patch_size
        return cls(height, width, up(height), up(width))

    @property
    def top(self) -> int:
        return (self.padded_height - self.height) // 2

    @property
    def left(self) -> int:
        return (self.padded_width - self.width) // 2

    def pad(self, images: jax.Array) -> jax.Array:
        """(B, height, width, C) -> (B, padded_h, padded_w, C), zeros around (the mean colour
        after normalisation), as DINOv2's CenterPadding."""
        bottom, right = self.padded_height - self.height - self.top, self.padded_width - self.width - self.left
        return jnp.pad(images, ((0, 0), (self.top, bottom), (self.left, right), (0, 0)))

    def output_window(self, resize: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """(the (h, w) an output map is resized to, the (top, left) of the input's window in it)."""
        if resize == "stretch":
            return (self.height, self.width), (0, 0)
        if resize == "crop":
            return (self.padded_height, self.padded_width), (self.top, self.left)
        raise ValueError(f"resize {resize!r} is not 'stretch' or 'crop'")


def to_input_size(x: jax.Array, placement: Placement, resize: str = "stretch") -> jax.Array:
    size, (top, left) = placement.output_window(resize)
    return resize_bilinear(x, size)[:, top : top + placement.height, left : left + placement.width]


class Fusion(nn.Module):
    """The "learned linear fusion" assembly: (…, 2D) original ++ fine-tuned -> (…, D)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.features, name="fusion")(x)


class SegmentationHead(nn.Module):
    """BatchNorm + 1x1 conv (weights ~ N(0, 0.01)) -> logits (B, H, W, num_classes) at input size,
    or with ``resized=False`` on the token grid (B, h, w, num_classes), for a loss that resizes."""

    num_classes: int
    fusion_features: int | None = None
    resize: str = "stretch"

    @nn.compact
    def __call__(self, tokens: jax.Array, cls: jax.Array, placement: Placement, train: bool, resized: bool = True) -> jax.Array:
        del cls  # the segmentation head uses patch tokens only
        x = Fusion(self.fusion_features)(tokens) if self.fusion_features else tokens
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(x)
        logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), name="conv_seg")(x)
        return to_input_size(logits, placement, self.resize) if resized else logits


class DepthHead(nn.Module):
    """[patch, CLS] per token -> 1x1 conv to ``num_bins`` scores -> x4 bilinear -> "linear"
    normalisation (ReLU, + 0.1, divide by the sum) -> depth = sum of bin centres (linspace over
    [min_depth, max_depth]) weighted by the scores; returns (depth (B, H, W), bin scores
    (B, H, W, num_bins) before normalisation, for the classification loss). With fusion, the CLS
    token goes through the same map when it is assembled like the patches (``fuse_cls``)."""

    min_depth: float
    max_depth: float
    num_bins: int = 256
    upsample: int = 4
    fusion_features: int | None = None
    fuse_cls: bool = True
    resize: str = "stretch"

    @nn.compact
    def __call__(self, tokens: jax.Array, cls: jax.Array, placement: Placement, train: bool) -> tuple[jax.Array, jax.Array]:
        del train  # no BatchNorm here (commented out in the DINOv2 depth head)
        if self.fusion_features:
            fuse = Fusion(self.fusion_features)
            tokens, cls = fuse(tokens), fuse(cls) if self.fuse_cls else cls
        x = jnp.concatenate([tokens, jnp.broadcast_to(cls[:, None, None], tokens.shape[:3] + cls.shape[-1:])], axis=-1)
        # The 1x1 conv and bilinear resizing are both linear, so convolving before the x4
        # upsampling equals the reference order and costs 16x less.
        scores = nn.Dense(self.num_bins, kernel_init=nn.initializers.normal(0.01), name="conv_depth")(x)
        h, w = scores.shape[1:3]
        scores = resize_bilinear(scores, (h * self.upsample, w * self.upsample))
        probabilities = jax.nn.relu(scores) + 0.1
        probabilities = probabilities / jnp.sum(probabilities, axis=-1, keepdims=True)
        bins = jnp.linspace(self.min_depth, self.max_depth, self.num_bins)
        depth = jnp.einsum("bhwk,k->bhw", probabilities, bins)[..., None]
        return to_input_size(depth, placement, self.resize)[..., 0], to_input_size(scores, placement, self.resize)
