"""What differs between segmentation and depth probes: the head, the training loss, and how an
evaluated map is reduced to metric sums."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.probe import losses, metrics
from fit3d_jax.probe.datasets import DEPTH, SEGMENTATION, Dataset
from fit3d_jax.probe.heads import DepthHead, SegmentationHead

DEPTH_LOSSES = ("sigloss", "classification")


class SegmentationTask:
    name = SEGMENTATION

    def __init__(self, dataset: Dataset, fusion_features: int | None):
        self.dataset = dataset
        self.head = SegmentationHead(dataset.num_classes, fusion_features)

    def loss(self, out, target, step):
        del step
        return losses.segmentation_cross_entropy(out, target)

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

    def __init__(self, dataset: Dataset, fusion_features: int | None, loss: str = "sigloss", warmup_calls: int = losses.SIG_WARMUP_CALLS):
        if loss not in DEPTH_LOSSES:
            raise ValueError(f"depth loss {loss!r} is not one of {DEPTH_LOSSES}")
        self.dataset, self.loss_name, self.warmup_calls = dataset, loss, warmup_calls
        self.head = DepthHead(dataset.min_depth, dataset.max_depth, fusion_features=fusion_features)

    def loss(self, out, target, step):
        depth, scores = out
        valid = losses.depth_valid(target, self.dataset.max_depth)
        if self.loss_name == "classification":
            return losses.bin_classification_loss(scores, target, valid, self.dataset.min_depth, self.dataset.max_depth)
        return losses.sig_loss(depth, target, valid, step < self.warmup_calls) + 0.5 * losses.gradient_loss(depth, target, valid)

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


def make_task(dataset: Dataset, fusion_features: int | None, depth_loss: str = "sigloss"):
    if dataset.task == SEGMENTATION:
        return SegmentationTask(dataset, fusion_features)
    return DepthTask(dataset, fusion_features, depth_loss)
