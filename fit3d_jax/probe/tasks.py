"""What differs between segmentation and depth probes: the head, the training loss, and how an
evaluated map is reduced to metric sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from fit3d_jax.probe import fused_loss, losses, metrics
from fit3d_jax.probe.assembly import Backbones
from fit3d_jax.probe.datasets import DEPTH, SEGMENTATION, Dataset
from fit3d_jax.probe.heads import DepthHead, Placement, SegmentationHead
from fit3d_jax.probe.protocol import Protocol


def _apply_training(head, variables: dict, tokens, cls, placement: Placement, **kwargs):
    """The head in training mode -> (output, updated batch statistics)."""
    out, mutated = head.apply(variables, tokens, cls, placement, train=True, mutable=["batch_stats"], **kwargs)
    return out, mutated.get("batch_stats", {})


class SegmentationTask:
    name = SEGMENTATION

    def __init__(self, dataset: Dataset, backbones: Backbones, protocol: Protocol, fused_mesh: Mesh | None = None):
        self.dataset, self.protocol, self.fused_mesh = dataset, protocol, fused_mesh
        self.head = SegmentationHead(dataset.num_classes, backbones.fusion_features, resize=protocol.output_resize)

    def training_loss(self, variables: dict, tokens, cls, placement: Placement, target, step):
        """(loss, batch statistics): through the fused kernel when the task has its mesh."""
        del step
        logits, batch_stats = _apply_training(self.head, variables, tokens, cls, placement, resized=False)
        args = (logits, target, placement, self.protocol.output_resize, self.protocol.seg_loss_average == "all_pixels")
        if self.fused_mesh is None:
            return fused_loss.reference_cross_entropy(*args), batch_stats
        return fused_loss.resized_cross_entropy(*args, mesh=self.fused_mesh), batch_stats

    def empty_sums(self):
        n = self.dataset.num_classes
        return jnp.zeros((n, n), jnp.int32)

    def reduce(self, scores: jax.Array, label: jax.Array, valid: jax.Array) -> jax.Array:
        """(H, W, K) scores and (H, W) labels (IGNORE_INDEX-padded) -> confusion matrix."""
        del valid
        return metrics.confusion_matrix(jnp.argmax(scores, -1), label, self.dataset.num_classes)

    def summarize(self, sums) -> dict:
        return metrics.segmentation_metrics(np.asarray(sums), self.dataset.class_names)

    def pad_target(self) -> int:
        return metrics.IGNORE_INDEX


class DepthTask:
    name = DEPTH

    def __init__(self, dataset: Dataset, backbones: Backbones, protocol: Protocol):
        self.dataset, self.protocol, self.warmup_calls = dataset, protocol, protocol.sigloss_warmup
        self.head = DepthHead(dataset.min_depth, dataset.max_depth, fusion_features=backbones.fusion_features,
                              fuse_cls=not backbones.raw_tokens, resize=protocol.output_resize)

    def training_loss(self, variables: dict, tokens, cls, placement: Placement, target, step):
        out, batch_stats = _apply_training(self.head, variables, tokens, cls, placement)
        return self.loss(out, target, step), batch_stats

    def loss(self, out, target, step):
        depth, scores = out
        # FiT3D's SigLoss and GradientLoss leave max_depth at None: every pixel with depth counts.
        valid = losses.depth_valid(target, None)
        p = self.protocol
        if p.depth_loss == "classification":
            return losses.bin_classification_loss(scores, target, valid, self.dataset.min_depth, self.dataset.max_depth)
        loss = losses.grouped_sig_loss(depth, target, valid, step < self.warmup_calls, p.depth_loss_group)
        return loss + 0.5 * losses.gradient_loss(depth, target, valid) if p.depth_loss == "sigloss+gradient" else loss

    def empty_sums(self):
        return jnp.zeros(len(metrics.DEPTH_METRICS), jnp.float32), jnp.zeros((), jnp.int32)

    def reduce(self, depth: jax.Array, gt: jax.Array, valid: jax.Array):
        """(H, W, 1) prediction, (H, W) ground truth, (H, W) evaluation mask -> metric sums."""
        valid = valid & (gt > self.dataset.min_depth) & (gt < self.dataset.max_depth)
        return metrics.depth_metric_sums(depth[None, ..., 0], gt[None], valid[None])

    def summarize(self, sums) -> dict:
        return metrics.depth_metrics(*jax.device_get(sums))

    def pad_target(self) -> float:
        return 0.0


def make_task(dataset: Dataset, backbones: Backbones, protocol: Protocol | None = None, fused_mesh: Mesh | None = None):
    """``fused_mesh``: the mesh a segmentation loss runs the fused kernel over (None: XLA's loss)."""
    protocol = protocol or Protocol()
    protocol.check()
    if dataset.task == SEGMENTATION:
        return SegmentationTask(dataset, backbones, protocol, fused_mesh)
    return DepthTask(dataset, backbones, protocol)
