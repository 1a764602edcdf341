"""Probe metrics, as mmsegmentation and the DINOv2 depth evaluation compute them.

Segmentation: a confusion matrix accumulated over the whole split (pixels labelled
``IGNORE_INDEX`` do not count); IoU and per-class accuracy are averaged over the classes for which
they are defined (union > 0, resp. present in the ground truth), aAcc is overall pixel accuracy.

Depth: each image's metrics are computed over its valid pixels (min < gt < max, inside the
dataset's evaluation crop) and then averaged over images.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_INDEX = 255
DEPTH_METRICS = ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def confusion_matrix(prediction: jax.Array, label: jax.Array, num_classes: int) -> jax.Array:
    """(num_classes, num_classes) int32 counts, rows = ground truth, columns = prediction; labels
    outside [0, num_classes) (the ignore index, padding) are skipped."""
    label = label.reshape(-1).astype(jnp.int32)
    prediction = prediction.reshape(-1).astype(jnp.int32)
    valid = (label >= 0) & (label < num_classes)
    index = jnp.where(valid, label * num_classes + prediction, 0)
    counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index].add(valid.astype(jnp.int32))
    return counts.reshape(num_classes, num_classes)


def segmentation_metrics(confusion: np.ndarray, class_names: tuple[str, ...] | None = None) -> dict:
    """mIoU, mAcc, aAcc in percent, plus per-class IoU / Acc (None where undefined)."""
    confusion = np.asarray(confusion, np.float64)
    intersection = np.diag(confusion)
    label_area = confusion.sum(axis=1)
    union = label_area + confusion.sum(axis=0) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
        acc = np.where(label_area > 0, intersection / label_area, np.nan)
    total = confusion.sum()
    names = class_names or tuple(str(i) for i in range(len(confusion)))
    to_list = lambda a: [None if np.isnan(v) else float(100 * v) for v in a]
    return {
        "mIoU": float(100 * np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "mAcc": float(100 * np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "aAcc": float(100 * intersection.sum() / total) if total else float("nan"),
        "per_class": {"names": list(names), "IoU": to_list(iou), "Acc": to_list(acc)},
    }


def depth_metric_sums(prediction: jax.Array, gt: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-image metrics of a batch (B, H, W), summed over the images that have valid pixels.

    Returns (sums (len(DEPTH_METRICS),), number of images counted). ``prediction`` must be
    positive where valid (the heads clamp to the dataset's minimum depth)."""
    valid = valid & (gt > 0)
    n = jnp.sum(valid, axis=(1, 2)).astype(jnp.float32)
    safe_gt = jnp.where(valid, gt, 1.0)
    safe_pred = jnp.where(valid, prediction, 1.0)
    mean = lambda x: jnp.sum(jnp.where(valid, x, 0.0), axis=(1, 2)) / jnp.maximum(n, 1.0)
    ratio = jnp.maximum(safe_gt / safe_pred, safe_pred / safe_gt)
    log_diff = jnp.log(safe_pred) - jnp.log(safe_gt)
    per_image = jnp.stack([
        mean(ratio < 1.25),
        mean(ratio < 1.25**2),
        mean(ratio < 1.25**3),
        mean(jnp.abs(safe_gt - safe_pred) / safe_gt),
        mean((safe_gt - safe_pred) ** 2 / safe_gt),
        jnp.sqrt(mean((safe_gt - safe_pred) ** 2)),
        jnp.sqrt(mean(log_diff**2)),
        mean(jnp.abs(jnp.log10(safe_pred) - jnp.log10(safe_gt))),
        jnp.sqrt(jnp.maximum(mean(log_diff**2) - mean(log_diff) ** 2, 0.0)) * 100,
    ], axis=1)
    counted = n > 0
    return jnp.sum(jnp.where(counted[:, None], per_image, 0.0), axis=0), jnp.sum(counted)


def depth_metrics(sums: np.ndarray, count: int) -> dict:
    """The image-averaged metrics from accumulated ``depth_metric_sums``."""
    if count == 0:
        raise ValueError("no image has valid ground-truth depth: nothing to evaluate")
    return {name: float(value) / count for name, value in zip(DEPTH_METRICS, np.asarray(sums, np.float64))} | {"images": int(count)}
