"""The choices where FiT3D's evaluation code (``ywyue/FiT3D`` ``evaluation/``: mmseg 0.27, the depth
toolbox) does something a plain reading of the paper would not. FiT3D's behaviour is the default of
each; the other value is this project's reading, kept where it is a deliberate improvement.
WORKSPACE.md lists them with the code they come from."""

from __future__ import annotations

import dataclasses

from fit3d_jax.probe.assembly import FEATURES

OUTPUT_RESIZES = ("stretch", "crop")
SEG_LOSS_AVERAGES = ("all_pixels", "labelled")
DEPTH_LOSSES = ("sigloss", "sigloss+gradient", "classification")


@dataclasses.dataclass(frozen=True)
class Protocol:
    # fit3d: final-norm tokens for segmentation; un-normalised tokens and the original's CLS for depth.
    # dinov2: final-norm tokens and every model's CLS (see probe/assembly.py).
    features: str = "fit3d"
    # stretch: the head's output on the centre-padded input is resized onto the unpadded input (mmseg's
    # and the toolbox's resize to img.shape). crop: resized to the padded size, the padding cut away.
    output_resize: str = "stretch"
    # all_pixels: cross-entropy summed over labelled pixels, divided by all pixels (mmseg 0.27,
    # avg_non_ignore=False). labelled: divided by the labelled pixels.
    seg_loss_average: str = "all_pixels"
    # sigloss: SigLoss alone (FiT3D adds 0.5 x GradientLoss, whose slicing runs over the batch and
    # channel axes and is identically zero at 2 images per GPU). sigloss+gradient: plus this project's
    # per-image gradient loss. classification: cross-entropy over the depth bins.
    depth_loss: str = "sigloss"
    # Images pooled by one SigLoss: FiT3D computes it per GPU over its 2 images and averages the
    # gradients over GPUs. 0 = the whole global batch.
    depth_loss_group: int = 2
    # SigLoss's warm-up: its first calls (one per iteration) use the mean term alone (FiT3D: 100).
    sigloss_warmup: int = 100

    def check(self) -> None:
        """ValueError naming the field whose value is not one of its choices."""
        for name, choices in (("features", FEATURES), ("output_resize", OUTPUT_RESIZES),
                              ("seg_loss_average", SEG_LOSS_AVERAGES), ("depth_loss", DEPTH_LOSSES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"protocol.{name}={getattr(self, name)!r} is not one of {choices}")
        for name in ("depth_loss_group", "sigloss_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"protocol.{name}={getattr(self, name)} must be >= 0")
