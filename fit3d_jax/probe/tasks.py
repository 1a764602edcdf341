"""What differs between segmentation and depth probes: the head, the training loss, and how an
evaluated map is reduced to metric sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.probe import losses, metrics
from fit3d_jax.probe.assembly import Backbones
from fit3d_jax.probe.datasets import DEPTH, SEGMENTATION, Dataset
from fit3d_jax.probe.heads import DepthHead, SegmentationHead
from fit3d_jax.probe.protocol import Protocol


class SegmentationTask:
    name = SEGMENTATION

    def __init__(self, dataset: Dataset, backbones: Backbones, protocol: Protocol):
        self.dataset, self.protocol = dataset, protocol
        self.head = SegmentationHead(dataset.num_classes, backbones.fusion_features, resize=protocol.output_resize)

    def loss(self, out, target, step):
        del step
        return losses.segmentation_cross_entropy(out, target, all_pixels=self.protocol.seg_loss_average == "all_pixels")

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


def make_task(dataset: Dataset, backbones: Backbones, protocol: Protocol | None = None):
    protocol = protocol or Protocol()
    protocol.check()
    return (SegmentationTask if dataset.task == SEGMENTATION else DepthTask)(dataset, backbones, protocol)
