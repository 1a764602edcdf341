"""Unit tests of the linear-probing maths (fit3d_jax/probe): metrics, losses, bilinear resizing,
heads, feature assemblies, dense inference, the learning-rate schedule and the augmentations.

References are independent re-implementations: plain numpy, or PyTorch for the formulas the
DINOv2 / mmseg code computes with torch (losses, F.interpolate). CPU only, small shapes.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fit3d_jax import resize
from fit3d_jax.images import IMAGENET_MEAN, IMAGENET_STD, STATISTICS, normalize
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig, init_params
from fit3d_jax.probe import augment, device_augment, inference, losses, metrics
from fit3d_jax.probe.assembly import ASSEMBLIES, Backbones
from fit3d_jax.probe.datasets.types import DEPTH, Dataset, Split
from fit3d_jax.probe.heads import DepthHead, Placement, SegmentationHead
from fit3d_jax.probe.protocol import Protocol
from fit3d_jax.probe.tasks import DepthTask, make_task
from fit3d_jax.probe.train import Schedule, learning_rate, one_cycle_beta1, optimizer

IGNORE = metrics.IGNORE_INDEX


def torch_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, H, W, C) numpy -> torch bilinear (align_corners=False) -> (B, *size, C) float64."""
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float64).transpose(0, 3, 1, 2)))
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return out.numpy().transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------------------------
# 1. Segmentation metrics
# ----------------------------------------------------------------------------------------------


def test_confusion_matrix_and_metrics_hand_computed():
    # K = 5. Class 3 is predicted but never in the ground truth; class 4 appears only in a
    # prediction at an ignored pixel, so it is absent from both. Labels 255, 7 (>= K) and -1 skip.
    label = np.array([[0, 0, 1, 1, 2, IGNORE], [IGNORE, 0, 7, -1, 2, 2]])
    pred = np.array([[0, 3, 1, 1, 2, 4], [0, 0, 4, 4, 0, 2]])
    confusion = np.asarray(metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label), 5))
    expected = np.zeros((5, 5), np.int64)
    expected[0, 0] = 2  # (0,0) twice
    expected[0, 3] = 1
    expected[1, 1] = 2
    expected[2, 2] = 2
    expected[2, 0] = 1
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.dtype == np.int32

    m = metrics.segmentation_metrics(confusion, ("a", "b", "c", "d", "e"))
    # class 0: I=2, gt=3, pred=3 -> IoU 2/4, Acc 2/3
    # class 1: I=2, gt=2, pred=2 -> 1, 1
    # class 2: I=2, gt=3, pred=2 -> IoU 2/3, Acc 2/3
    # class 3: I=0, gt=0, pred=1 -> IoU 0 (counted), Acc undefined
    # class 4: union 0 -> both undefined
    iou = [0.5, 1.0, 2 / 3, 0.0, None]
    acc = [2 / 3, 1.0, 2 / 3, None, None]
    assert m["per_class"]["names"] == ["a", "b", "c", "d", "e"]
    for got, want in zip(m["per_class"]["IoU"], iou):
        assert (got is None and want is None) or got == pytest.approx(100 * want)
    for got, want in zip(m["per_class"]["Acc"], acc):
        assert (got is None and want is None) or got == pytest.approx(100 * want)
    assert m["mIoU"] == pytest.approx(100 * (0.5 + 1 + 2 / 3 + 0) / 4)
    assert m["mAcc"] == pytest.approx(100 * (2 / 3 + 1 + 2 / 3) / 3)
    assert m["aAcc"] == pytest.approx(100 * 6 / 8)


def test_segmentation_metrics_all_empty_is_nan():
    m = metrics.segmentation_metrics(np.zeros((3, 3), np.int32))
    assert math.isnan(m["mIoU"]) and math.isnan(m["mAcc"]) and math.isnan(m["aAcc"])
    assert m["per_class"]["IoU"] == [None] * 3 and m["per_class"]["names"] == ["0", "1", "2"]


def _numpy_confusion(pred, label, k):
    pred, label = pred.ravel(), label.ravel()
    keep = (label >= 0) & (label < k)
    return np.bincount(label[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def test_confusion_matrix_and_metrics_match_numpy_on_random_labels():
    rng = np.random.default_rng(11)
    k = 7
    total = np.zeros((k, k), np.int64)
    jax_total = jnp.zeros((k, k), jnp.int32)
    for _ in range(3):
        label = rng.integers(0, k - 1, size=(2, 13, 17))  # class k-1 never in the ground truth
        label[rng.random(label.shape) < 0.2] = IGNORE
        pred = rng.integers(0, k, size=label.shape)
        pred[pred == 2] = 1  # class 2 never predicted
        total += _numpy_confusion(pred, label, k)
        jax_total = jax_total + metrics.confusion_matrix(jnp.asarray(pred), jnp.asarray(label), k)
    np.testing.assert_array_equal(np.asarray(jax_total), total)

    m = metrics.segmentation_metrics(np.asarray(jax_total))
    c = total.astype(np.float64)
    inter, gt, pr = np.diag(c), c.sum(1), c.sum(0)
    union = gt + pr - inter
    iou = [inter[i] / union[i] if union[i] > 0 else None for i in range(k)]
    acc = [inter[i] / gt[i] if gt[i] > 0 else None for i in range(k)]
    assert acc[k - 1] is None and iou[k - 1] == 0.0  # sanity of the construction
    assert m["mIoU"] == pytest.approx(100 * np.mean([v for v in iou if v is not None]))
    assert m["mAcc"] == pytest.approx(100 * np.mean([v for v in acc if v is not None]))
    assert m["aAcc"] == pytest.approx(100 * inter.sum() / c.sum())
    for got, want in zip(m["per_class"]["IoU"] + m["per_class"]["Acc"], iou + acc):
        assert (got is None) == (want is None)
        if want is not None:
            assert got == pytest.approx(100 * want)


# ----------------------------------------------------------------------------------------------
# 2. Depth metrics
# ----------------------------------------------------------------------------------------------


def _numpy_depth_metrics(pred, gt, valid):
    rows = []
    for p, g, v in zip(pred, gt, valid):
        v = v & (g > 0)
        if not v.any():
            continue
        p, g = p[v].astype(np.float64), g[v].astype(np.float64)
        thresh = np.maximum(g / p, p / g)
        d = np.log(p) - np.log(g)
        rows.append([
            np.mean(thresh < 1.25), np.mean(thresh < 1.25**2), np.mean(thresh < 1.25**3),
            np.mean(np.abs(g - p) / g), np.mean((g - p) ** 2 / g), np.sqrt(np.mean((g - p) ** 2)),
            np.sqrt(np.mean(d**2)), np.mean(np.abs(np.log10(p) - np.log10(g))),
            np.sqrt(np.mean(d**2) - np.mean(d) ** 2) * 100,
        ])
    return np.mean(rows, axis=0), len(rows)


def test_depth_metrics_match_numpy_per_image_reference():
    rng = np.random.default_rng(5)
    b, h, w = 5, 9, 11
    gt = rng.uniform(0.5, 8.0, (b, h, w)).astype(np.float32)
    pred = (gt * np.exp(rng.normal(0.05, 0.25, gt.shape))).astype(np.float32)
    valid = rng.random(gt.shape) < 0.8
    gt[rng.random(gt.shape) < 0.15] = 0.0  # missing measurements, even where valid is True
    valid[2] = False  # an image with no valid pixel: not counted
    gt[3, :, :] = 0.0  # another one (all gt missing)
    # garbage where not counted: would dominate every metric if it leaked in
    pred[~valid | (gt == 0)] = 1e4
    sums, count = metrics.depth_metric_sums(jnp.asarray(pred), jnp.asarray(gt), jnp.asarray(valid))
    want, n = _numpy_depth_metrics(pred, gt, valid)
    assert int(count) == n == 3
    got = metrics.depth_metrics(np.asarray(sums), int(count))
    assert got["images"] == 3
    for name, value in zip(metrics.DEPTH_METRICS, want):
        assert got[name] == pytest.approx(value, rel=2e-4, abs=1e-6), name
    # the threshold metrics are not trivially 1
    assert 0.3 < got["a1"] < 0.99


def test_depth_metrics_perfect_prediction_and_scale():
    gt = np.random.default_rng(1).uniform(1, 5, (2, 6, 7)).astype(np.float32)
    valid = np.ones(gt.shape, bool)
    sums, count = metrics.depth_metric_sums(jnp.asarray(gt), jnp.asarray(gt), jnp.asarray(valid))
    m = metrics.depth_metrics(np.asarray(sums), int(count))
    assert m["a1"] == m["a2"] == m["a3"] == 1.0
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert m[name] == pytest.approx(0.0, abs=1e-5)
    # a constant scale error: silog (scale invariant) stays ~0, abs_rel = |s - 1|
    sums, count = metrics.depth_metric_sums(jnp.asarray(1.5 * gt), jnp.asarray(gt), jnp.asarray(valid))
    m = metrics.depth_metrics(np.asarray(sums), int(count))
    assert m["silog"] == pytest.approx(0.0, abs=0.05)
    assert m["abs_rel"] == pytest.approx(0.5, rel=1e-5)
    assert m["a1"] == 0.0 and m["a2"] == 1.0


def test_depth_metrics_raise_without_counted_images():
    gt = np.ones((2, 4, 4), np.float32)
    sums, count = metrics.depth_metric_sums(jnp.asarray(gt), jnp.asarray(gt), jnp.zeros(gt.shape, bool))
    assert int(count) == 0
    np.testing.assert_array_equal(np.asarray(sums), 0.0)
    with pytest.raises(ValueError):
        metrics.depth_metrics(np.asarray(sums), int(count))


# ----------------------------------------------------------------------------------------------
# 3. Losses vs torch references of the DINOv2 formulas
# ----------------------------------------------------------------------------------------------


def torch_sigloss(pred, gt, max_depth, warm):
    pred, gt = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64)
    mask = (gt > 0) & (gt <= max_depth)
    g = torch.log(pred[mask] + 1e-3) - torch.log(gt[mask] + 1e-3)
    if warm:
        return float(torch.sqrt(0.15 * torch.mean(g) ** 2))
    return float(torch.sqrt(torch.var(g) + 0.15 * torch.mean(g) ** 2))


def torch_gradient_loss(pred, gt, max_depth):
    """DINOv2's GradientLoss with the slicing on the (H, W) axes of (B, H, W) tensors."""
    pred, gt = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64)
    total = 0.0
    for s in (1, 2, 4, 6):
        x, t = pred[:, ::s, ::s], gt[:, ::s, ::s]
        mask = ((t > 0) & (t <= max_depth)).double()
        n = torch.sum(mask)
        d = (torch.log(x + 1e-3) - torch.log(t + 1e-3)) * mask
        v = torch.abs(d[:, 0:-2, :] - d[:, 2:, :]) * mask[:, 0:-2, :] * mask[:, 2:, :]
        h = torch.abs(d[:, :, 0:-2] - d[:, :, 2:]) * mask[:, :, 0:-2] * mask[:, :, 2:]
        total = total + (torch.sum(h) + torch.sum(v)) / n
    return float(total)


def _depth_pair(rng, shape, max_depth=10.0):
    gt = rng.uniform(0.2, 12.0, shape).astype(np.float32)  # some beyond max_depth
    gt[rng.random(shape) < 0.2] = 0.0
    pred = rng.uniform(0.1, 9.0, shape).astype(np.float32)
    return pred, gt, max_depth


@pytest.mark.parametrize("warm", [True, False])
def test_sig_loss_matches_torch(warm):
    rng = np.random.default_rng(21 + warm)
    pred, gt, max_depth = _depth_pair(rng, (3, 10, 13))
    valid = losses.depth_valid(jnp.asarray(gt), max_depth)
    assert 0 < int(valid.sum()) < gt.size
    got = float(jax.jit(losses.sig_loss, static_argnums=3)(jnp.asarray(pred), jnp.asarray(gt), valid, warm))
    assert got == pytest.approx(torch_sigloss(pred, gt, max_depth, warm), rel=1e-5)
    # warm-up as a traced boolean (what the task passes: step < warm-up calls)
    traced = jax.jit(losses.sig_loss)(jnp.asarray(pred), jnp.asarray(gt), valid, jnp.asarray(warm))
    assert float(traced) == pytest.approx(got, rel=1e-6)


def test_depth_valid_includes_max_depth():
    gt = jnp.asarray([0.0, -1.0, 0.5, 10.0, 10.001])
    np.testing.assert_array_equal(np.asarray(losses.depth_valid(gt, 10.0)), [False, False, True, True, False])
    np.testing.assert_array_equal(np.asarray(losses.depth_valid(gt, None)), [False, False, True, True, True])


@pytest.mark.parametrize("shape", [(2, 17, 23), (3, 12, 12)])
def test_gradient_loss_matches_torch(shape):
    rng = np.random.default_rng(sum(shape))
    pred, gt, max_depth = _depth_pair(rng, shape)
    valid = losses.depth_valid(jnp.asarray(gt), max_depth)
    got = float(jax.jit(losses.gradient_loss)(jnp.asarray(pred), jnp.asarray(gt), valid))
    want = torch_gradient_loss(pred, gt, max_depth)
    assert want > 0.1
    assert got == pytest.approx(want, rel=1e-5)


def test_gradient_loss_is_zero_for_scaled_prediction():
    gt = np.random.default_rng(2).uniform(1, 5, (2, 14, 14)).astype(np.float32)
    valid = jnp.ones(gt.shape, bool)
    # log(s * gt + eps) - log(gt + eps) is not exactly constant because of eps, but nearly
    loss = float(jax.jit(losses.gradient_loss)(jnp.asarray(2.0 * gt), jnp.asarray(gt), valid))
    assert loss < 1e-3


def test_segmentation_cross_entropy_matches_mmseg_and_torch():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (2, 7, 9, 6)).astype(np.float32)
    labels = rng.integers(0, 6, (2, 7, 9))
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    torch_logits, torch_labels = torch.from_numpy(logits).permute(0, 3, 1, 2).double(), torch.from_numpy(labels)
    # mmseg 0.27's CrossEntropyLoss (avg_non_ignore=False): reduction='none', then the mean over all pixels
    mmseg = F.cross_entropy(torch_logits, torch_labels, reduction="none", ignore_index=IGNORE).mean()
    got = float(losses.segmentation_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    assert got == pytest.approx(float(mmseg), rel=1e-5)
    labelled = F.cross_entropy(torch_logits, torch_labels, ignore_index=IGNORE)
    got = float(losses.segmentation_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), all_pixels=False))
    assert got == pytest.approx(float(labelled), rel=1e-5)
    # all pixels ignored: 0 in both modes (torch's mean over labelled pixels would give nan)
    all_ignored = jnp.asarray(np.full(labels.shape, IGNORE))
    for all_pixels in (True, False):
        assert float(losses.segmentation_cross_entropy(jnp.asarray(logits), all_ignored, all_pixels)) == 0.0


def test_bin_classification_loss_targets_and_top_bin():
    rng = np.random.default_rng(4)
    min_depth, max_depth, k = 0.001, 10.0, 256
    step = (max_depth - min_depth) / (k - 1)
    shape = (2, 5, 6)
    # gt near (not at half-way between) bin centres, plus the extremes
    index = rng.integers(0, k, shape)
    gt = (min_depth + (index + rng.uniform(-0.3, 0.3, shape)) * step).astype(np.float32)
    gt[0, 0, 0], index[0, 0, 0] = max_depth, k - 1
    gt[0, 0, 1], index[0, 0, 1] = min_depth, 0
    gt[0, 0, 2] = 0.0  # missing: invalid
    gt[0, 0, 3] = 20.0  # beyond max depth: invalid
    # (index 0 with a negative offset is below min_depth, possibly <= 0: target 0 or invalid)
    valid = np.asarray(losses.depth_valid(jnp.asarray(gt), max_depth))
    assert valid[0, 0, 0] and not valid[0, 0, 2] and not valid[0, 0, 3]
    logits = rng.normal(0, 1, (*shape, k)).astype(np.float32)
    got = float(losses.bin_classification_loss(jnp.asarray(logits), jnp.asarray(gt), jnp.asarray(valid), min_depth, max_depth))
    targets = torch.from_numpy(np.where(valid, index, -100))
    want = F.cross_entropy(torch.from_numpy(logits).permute(0, 3, 1, 2).double(), targets, ignore_index=-100)
    assert got == pytest.approx(float(want), rel=1e-5)

    # A single valid pixel at max depth: its target must be bin 255 (a valid class, not ignored).
    only = np.zeros(shape, bool)
    only[0, 0, 0] = True
    one_hot = np.full((*shape, k), -30.0, np.float32)
    one_hot[..., k - 1] = 30.0
    loss = float(losses.bin_classification_loss(jnp.asarray(one_hot), jnp.asarray(gt), jnp.asarray(only), min_depth, max_depth))
    assert loss < 1e-6
    one_hot[..., k - 1], one_hot[..., k - 2] = -30.0, 30.0
    loss = float(losses.bin_classification_loss(jnp.asarray(one_hot), jnp.asarray(gt), jnp.asarray(only), min_depth, max_depth))
    assert loss == pytest.approx(60.0, rel=1e-4)


# ----------------------------------------------------------------------------------------------
# 4. Bilinear resizing
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_size,out_size", [
    ((3, 5), (42, 70)),  # x14
    ((4, 6), (16, 24)),  # x4
    ((5, 3), (15, 21)),  # x3, x7
    ((7, 4), (12, 9)),  # non-integer upsampling
    ((37, 50), (16, 21)),  # non-integer downsampling
    ((30, 44), (10, 11)),  # integer downsampling x3, x4
    ((9, 8), (9, 5)),  # one axis unchanged
    ((1, 6), (4, 1)),  # degenerate sizes
])
def test_resize_bilinear_matches_torch(in_size, out_size):
    rng = np.random.default_rng(in_size[0] * 100 + out_size[1])
    x = rng.normal(size=(2, *in_size, 3)).astype(np.float32)
    got = np.asarray(resize.resize_bilinear(jnp.asarray(x), out_size))
    assert got.shape == (2, *out_size, 3)
    np.testing.assert_allclose(got, torch_resize(x, out_size), atol=2e-6, rtol=1e-5)


def test_resize_bilinear_gradient_is_the_transposed_resize():
    """The hand-written backward (transposed taps) against the matrices' transpose, and against
    finite differences on a few entries."""
    rng = np.random.default_rng(3)
    for in_size, out_size in [((3, 5), (42, 70)), ((37, 50), (16, 21)), ((1, 6), (4, 1))]:
        x = jnp.asarray(rng.normal(size=(2, *in_size, 3)), jnp.float32)
        g = rng.normal(size=(2, *out_size, 3)).astype(np.float32)
        _, pullback = jax.vjp(functools.partial(resize.resize_bilinear, size=out_size), x)
        rows, cols = resize.bilinear_weights(out_size[0], in_size[0]), resize.bilinear_weights(out_size[1], in_size[1])
        want = np.einsum("yh,byxc,xw->bhwc", rows.astype(np.float64), g, cols.astype(np.float64))
        np.testing.assert_allclose(np.asarray(pullback(jnp.asarray(g))[0]), want, atol=1e-5, rtol=1e-5)
    loss = lambda v: jnp.sum(resize.resize_bilinear(v, (11, 9)) ** 2)
    x = jnp.asarray(rng.normal(size=(1, 4, 3, 2)), jnp.float32)
    grad = np.asarray(jax.grad(loss)(x))
    for index in [(0, 0, 0, 0), (0, 3, 2, 1), (0, 1, 1, 0)]:
        step = np.zeros(x.shape, np.float32)
        step[index] = 1e-2
        numeric = (float(loss(x + step)) - float(loss(x - step))) / 2e-2
        np.testing.assert_allclose(grad[index], numeric, rtol=1e-3)


def test_resize_bilinear_same_size_is_identity():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 6, 2)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(resize.resize_bilinear(x, (5, 6))), np.asarray(x))
    np.testing.assert_allclose(resize.bilinear_weights(6, 6), np.eye(6), atol=0)


@pytest.mark.parametrize("out_size,in_size,padded_out,padded_in", [(13, 5, 64, 8), (7, 19, 9, 64), (4, 4, 4, 10)])
def test_bilinear_weights_padding(out_size, in_size, padded_out, padded_in):
    plain = resize.bilinear_weights(out_size, in_size)
    padded = resize.bilinear_weights(out_size, in_size, padded_out, padded_in)
    assert padded.shape == (padded_out, padded_in) and plain.shape == (out_size, in_size)
    np.testing.assert_array_equal(padded[:out_size, :in_size], plain)
    assert not padded[out_size:].any() and not padded[:, in_size:].any()
    np.testing.assert_allclose(plain.sum(1), 1.0, atol=1e-6)
    assert (plain >= 0).all()
    # applied to a zero-padded input it gives the unpadded resize in the true block, zeros elsewhere
    rng = np.random.default_rng(out_size)
    x = rng.normal(size=(1, in_size, 3, 2)).astype(np.float32)
    x_padded = np.zeros((1, padded_in, 3, 2), np.float32)
    x_padded[:, :in_size] = x
    eye = jnp.eye(3)
    out = np.asarray(resize.apply_weights(jnp.asarray(x_padded), jnp.asarray(padded), eye))
    np.testing.assert_allclose(out[:, :out_size], torch_resize(x, (out_size, 3)), atol=2e-6)
    assert not out[:, out_size:].any()


# ----------------------------------------------------------------------------------------------
# 5. Heads and placement
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(37, 50), (14, 28), (15, 27), (1, 1), (29, 13)])
def test_placement_for_size_pad_crop_roundtrip(size):
    p = Placement.for_size(*size, 14)
    assert p.padded_height % 14 == 0 and p.padded_width % 14 == 0
    assert 0 <= p.padded_height - size[0] < 14 and 0 <= p.padded_width - size[1] < 14
    # DINOv2's CenterPadding: left = total // 2, right = total - left
    assert p.top == (p.padded_height - size[0]) // 2 and p.left == (p.padded_width - size[1]) // 2
    x = np.random.default_rng(size[0]).uniform(1, 2, (2, *size, 3)).astype(np.float32)
    padded = np.asarray(p.pad(jnp.asarray(x)))
    assert padded.shape == (2, p.padded_height, p.padded_width, 3)
    assert np.count_nonzero(padded) == x.size  # padding is zeros, nothing of x lost
    np.testing.assert_array_equal(padded[:, p.top : p.top + size[0], p.left : p.left + size[1]], x)
    torch_padded = fit3d_center_padding(torch.from_numpy(x).permute(0, 3, 1, 2), 14).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(padded, torch_padded)


def fit3d_center_padding(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """FiT3D's CenterPadding (evaluation/eval_utils/misc.py) on NCHW."""
    def pads(size):
        pad = math.ceil(size / multiple) * multiple - size
        return pad // 2, pad - pad // 2

    return F.pad(x, [p for size in x.shape[:1:-1] for p in pads(size)])


def _randomize(tree, rng, scale=1.0):
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0, scale, a.shape), a.dtype), tree)


def _to_input(x, placement, resize):
    """The reference of both resize modes: mmseg's resize of the padded grid's output onto the
    unpadded input (stretch), or a resize to the padded size and a crop."""
    if resize == "stretch":
        return torch_resize(x, (placement.height, placement.width))
    full = torch_resize(x, (placement.padded_height, placement.padded_width))
    return full[:, placement.top : placement.top + placement.height, placement.left : placement.left + placement.width]


@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_segmentation_head_matches_manual_computation(resize):
    rng = np.random.default_rng(7)
    placement = Placement.for_size(37, 50, 14)  # padded 42 x 56 -> 3 x 4 tokens
    tokens = rng.normal(size=(2, 3, 4, 8)).astype(np.float32)
    head = SegmentationHead(num_classes=5, resize=resize)
    variables = head.init(jax.random.key(0), jnp.asarray(tokens), jnp.zeros((2, 8)), placement, train=False)
    params = _randomize(variables["params"], rng)
    mean = rng.normal(size=8).astype(np.float32)
    var = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    variables = {"params": params, "batch_stats": {"bn": {"mean": jnp.asarray(mean), "var": jnp.asarray(var)}}}
    out = np.asarray(head.apply(variables, jnp.asarray(tokens), jnp.zeros((2, 8)), placement, train=False))
    assert out.shape == (2, 37, 50, 5)

    p = jax.tree.map(np.asarray, params)
    x = (tokens - mean) / np.sqrt(var + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
    logits = x @ p["conv_seg"]["kernel"] + p["conv_seg"]["bias"]
    np.testing.assert_allclose(out, _to_input(logits, placement, resize), atol=1e-4, rtol=1e-4)

    # training mode normalises with the batch statistics (biased variance) and updates the averages
    out_train, mutated = head.apply(variables, jnp.asarray(tokens), None, placement, train=True, mutable=["batch_stats"])
    flat = tokens.reshape(-1, 8)
    x = (tokens - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
    logits = x @ p["conv_seg"]["kernel"] + p["conv_seg"]["bias"]
    np.testing.assert_allclose(np.asarray(out_train), _to_input(logits, placement, resize), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(mutated["batch_stats"]["bn"]["mean"]), 0.9 * mean + 0.1 * flat.mean(0), rtol=1e-5, atol=1e-6)


def _depth_head_setup(seed, fusion=None, resize="stretch", fuse_cls=True, cls_dim=6):
    rng = np.random.default_rng(seed)
    placement = Placement.for_size(30, 41, 14)  # padded 42 x 42 -> 3 x 3 tokens
    tokens = rng.normal(size=(2, 3, 3, 6)).astype(np.float32)
    cls = rng.normal(size=(2, cls_dim)).astype(np.float32)
    head = DepthHead(min_depth=0.5, max_depth=10.0, num_bins=32, fusion_features=fusion, fuse_cls=fuse_cls, resize=resize)
    variables = head.init(jax.random.key(1), jnp.asarray(tokens), jnp.asarray(cls), placement, train=False)
    variables = {"params": _randomize(variables["params"], rng, 0.7)}
    return head, variables, placement, tokens, cls


def _depth_from_scores(scores, bins):
    prob = np.maximum(scores, 0) + 0.1
    prob = prob / prob.sum(-1, keepdims=True)
    return prob @ bins


@pytest.mark.parametrize("resize", ["stretch", "crop"])
def test_depth_head_matches_manual_computation_and_range(resize):
    head, variables, placement, tokens, cls = _depth_head_setup(8, resize=resize)
    depth, scores = head.apply(variables, jnp.asarray(tokens), jnp.asarray(cls), placement, train=False)
    depth, scores = np.asarray(depth), np.asarray(scores)
    assert depth.shape == (2, 30, 41) and scores.shape == (2, 30, 41, 32)
    assert depth.min() >= 0.5 - 1e-5 and depth.max() <= 10.0 + 1e-5
    assert depth.std() > 0.05  # a non-trivial map

    p = jax.tree.map(np.asarray, variables["params"])
    x = np.concatenate([tokens, np.broadcast_to(cls[:, None, None], (2, 3, 3, 6))], -1)
    conv = x @ p["conv_depth"]["kernel"] + p["conv_depth"]["bias"]
    up = torch_resize(conv, (12, 12))
    d = _depth_from_scores(up, np.linspace(0.5, 10.0, 32))[..., None]
    np.testing.assert_allclose(depth, _to_input(d, placement, resize)[..., 0], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(scores, _to_input(up, placement, resize), atol=2e-5, rtol=1e-5)

    # The reference order (upsample the features x4, then the 1x1 conv) gives the same depth.
    up_first = torch_resize(x, (12, 12)) @ p["conv_depth"]["kernel"].astype(np.float64) + p["conv_depth"]["bias"]
    np.testing.assert_allclose(up_first, up, atol=1e-5)
    d_ref = _depth_from_scores(up_first, np.linspace(0.5, 10.0, 32))[..., None]
    np.testing.assert_allclose(depth, _to_input(d_ref, placement, resize)[..., 0], atol=1e-5)


@pytest.mark.parametrize("fuse_cls", [True, False])
def test_depth_head_with_fusion(fuse_cls):
    """The CLS shares the fusion map when it is assembled like the patches (2D wide), and passes
    unfused when it is the original's alone (D wide: FiT3D's depth tokens)."""
    head, variables, placement, tokens, cls = _depth_head_setup(9, fusion=4, fuse_cls=fuse_cls, cls_dim=6 if fuse_cls else 3)
    depth, _ = head.apply(variables, jnp.asarray(tokens), jnp.asarray(cls), placement, train=False)
    p = jax.tree.map(np.asarray, variables["params"])
    fuse = lambda a: a @ p["Fusion_0"]["fusion"]["kernel"] + p["Fusion_0"]["fusion"]["bias"]
    t, c = fuse(tokens), fuse(cls) if fuse_cls else cls
    x = np.concatenate([t, np.broadcast_to(c[:, None, None], (2, 3, 3, c.shape[-1]))], -1)
    up = torch_resize(x @ p["conv_depth"]["kernel"] + p["conv_depth"]["bias"], (12, 12))
    d = _depth_from_scores(up, np.linspace(0.5, 10.0, 32))[..., None]
    np.testing.assert_allclose(np.asarray(depth), _to_input(d, placement, "stretch")[..., 0], atol=2e-5)


# ----------------------------------------------------------------------------------------------
# 6. Feature assemblies
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vit():
    config = ViTConfig(embed_dim=32, depth=2, num_heads=2)
    model = DinoV2(config)
    original = init_params(config, 0)
    rng = np.random.default_rng(1)
    finetuned = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(0, 0.05, a.shape), a.dtype), original)
    params = {"original": original, "finetuned": finetuned}
    return model, params


@pytest.fixture(scope="module")
def vit_images():
    return jnp.asarray(np.random.default_rng(12).normal(size=(2, 28, 42, 3)), jnp.float32)


@pytest.fixture(scope="module")
def vit_outputs(tiny_vit, vit_images):
    model, params = tiny_vit
    run = jax.jit(lambda p: model.apply({"params": p}, vit_images))
    return {k: jax.tree.map(np.asarray, run(p)) for k, p in params.items()}


@pytest.mark.parametrize("assembly", ASSEMBLIES)
def test_assemblies(assembly, tiny_vit, vit_images, vit_outputs):
    model, params = tiny_vit
    backbones = Backbones(model, assembly, "segmentation")

    def total(p):
        t, c = backbones.features(p, vit_images)
        return jnp.sum(t**2) + jnp.sum(c), (t, c)

    run = jax.jit(jax.value_and_grad(total, has_aux=True))  # one compile: features and gradients
    (_, (tokens, cls)), grads = run(params)
    tokens, cls = np.asarray(tokens), np.asarray(cls)
    assert tokens.shape == (2, 2, 3, backbones.feature_dim) and cls.shape == (2, backbones.feature_dim)
    assert tokens.dtype == np.float32
    o, f = vit_outputs["original"], vit_outputs["finetuned"]
    assert not np.allclose(o.patch_tokens, f.patch_tokens, atol=1e-3)  # the two models differ
    expected = {
        "original": (o.patch_tokens, o.cls_token),
        "finetuned": (f.patch_tokens, f.cls_token),
        "concat": (np.concatenate([o.patch_tokens, f.patch_tokens], -1), np.concatenate([o.cls_token, f.cls_token], -1)),
        "fusion": (np.concatenate([o.patch_tokens, f.patch_tokens], -1), np.concatenate([o.cls_token, f.cls_token], -1)),
        "add": (o.patch_tokens + f.patch_tokens, o.cls_token + f.cls_token),
        "duplicate": (np.concatenate([o.patch_tokens] * 2, -1), np.concatenate([o.cls_token] * 2, -1)),
    }[assembly]
    np.testing.assert_allclose(tokens, expected[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(cls, expected[1], atol=1e-5, rtol=1e-5)
    assert backbones.fusion_features == (32 if assembly == "fusion" else None)
    assert backbones.needs_finetuned == (assembly in ("finetuned", "concat", "add", "fusion"))

    # no gradient reaches the backbone parameters
    leaves = jax.tree.leaves(grads)
    assert leaves and all(not np.asarray(g).any() for g in leaves)

    # the model an assembly does not use is ignored, the ones it uses are not: negate each in turn
    uses = {"original": ("original",), "duplicate": ("original",), "finetuned": ("finetuned",)}.get(
        assembly, ("original", "finetuned"))
    for key in ("original", "finetuned"):
        swapped = dict(params, **{key: jax.tree.map(lambda a: -a, params[key])})
        (_, (other, _)), _ = run(swapped)
        assert np.allclose(np.asarray(other), tokens, atol=1e-6) == (key not in uses), key


def _layer_norm(x, norm):
    x = np.asarray(x, np.float64)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * np.asarray(norm["scale"]) + np.asarray(norm["bias"])


@pytest.mark.parametrize("assembly", ASSEMBLIES)
def test_depth_tokens_are_raw_with_the_first_models_cls(assembly, tiny_vit, vit_images, vit_outputs):
    """FiT3D's depth features (linear_evaluate_fit3d.py, norm=False): the last block before the final
    LayerNorm, so that this LayerNorm maps each model's part onto its normed tokens, and the CLS of
    the first model alone (the fine-tuned model's is dropped)."""
    model, params = tiny_vit
    backbones = Backbones(model, assembly, "depth")
    assert backbones.raw_tokens and backbones.cls_dim == 32
    run = jax.jit(backbones.features)
    tokens, cls = (np.asarray(a) for a in run(params, vit_images))
    assert tokens.shape == (2, 2, 3, backbones.feature_dim) and cls.shape == (2, 32)
    first = "finetuned" if assembly == "finetuned" else "original"
    norm = lambda k: params[k]["norm"]
    np.testing.assert_allclose(_layer_norm(cls, norm(first)), vit_outputs[first].cls_token, atol=1e-4)
    assert not np.allclose(cls, vit_outputs[first].cls_token, atol=1e-2)  # not normed
    parts = {"original": ["original"], "finetuned": ["finetuned"], "duplicate": ["original", "original"]}.get(
        assembly, ["original", "finetuned"])
    if assembly != "add":
        for i, k in enumerate(parts):
            np.testing.assert_allclose(_layer_norm(tokens[..., 32 * i : 32 * (i + 1)], norm(k)), vit_outputs[k].patch_tokens,
                                       atol=1e-4)
    if "finetuned" in parts and assembly != "finetuned":  # the fine-tuned model's CLS is not used
        negated = dict(params, finetuned=jax.tree.map(lambda a: -a, params["finetuned"]))
        np.testing.assert_array_equal(np.asarray(run(negated, vit_images)[1]), cls)
    # dinov2 tokens: normed, and the CLS assembled like the patches
    normed = Backbones(model, assembly, "depth", tokens="dinov2")
    assert not normed.raw_tokens and normed.cls_dim == normed.feature_dim


def test_unknown_assembly_task_or_tokens_is_rejected(tiny_vit):
    with pytest.raises(ValueError, match="assembly"):
        Backbones(tiny_vit[0], "sum", "segmentation")
    with pytest.raises(ValueError, match="task"):
        Backbones(tiny_vit[0], "concat", "normals")
    with pytest.raises(ValueError, match="features"):
        Backbones(tiny_vit[0], "concat", "depth", tokens="mean")


# ----------------------------------------------------------------------------------------------
# 7. Dense inference
# ----------------------------------------------------------------------------------------------


def mmseg_slide_windows(h_img, w_img, crop, stride):
    """mmseg's EncoderDecoder.slide_inference loop: (y1, y2, x1, x2) per window."""
    h_crop, w_crop = crop
    h_stride, w_stride = stride
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    out = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            out.append((y1, y2, x1, x2))
    return out


@pytest.mark.parametrize("size,crop,stride", [
    ((300, 400), (512, 512), (341, 341)),  # smaller than the crop: one window
    ((512, 512), (512, 512), (341, 341)),  # equal
    ((512, 683), (512, 512), (341, 341)),  # ADE20K-like: overlap along W
    ((900, 1300), (512, 512), (341, 341)),  # overlap along both
    ((40, 50), (30, 30), (18, 18)),
    ((100, 37), (64, 48), (20, 30)),  # taller than the crop, narrower than it
])
def test_window_origins_match_mmseg_and_cover(size, crop, stride):
    origins, (wh, ww) = inference.window_origins(*size, crop, stride)
    reference = mmseg_slide_windows(*size, crop, stride)
    assert [(y1, x1) for y1, _, x1, _ in reference] == origins
    assert all((y2 - y1, x2 - x1) == (wh, ww) for y1, y2, x1, x2 in reference)
    assert (wh, ww) == (min(crop[0], size[0]), min(crop[1], size[1]))
    covered = np.zeros(size, int)
    for y, x in origins:
        assert 0 <= y and y + wh <= size[0] and 0 <= x and x + ww <= size[1]
        covered[y : y + wh, x : x + ww] += 1
    assert covered.min() >= 1


@pytest.fixture(scope="module")
def seg_setup(tiny_vit):
    model, params = tiny_vit
    backbones = Backbones(model, "concat", "segmentation")
    head = SegmentationHead(num_classes=4)
    rng = np.random.default_rng(13)
    dummy = jnp.zeros((1, 3, 3, backbones.feature_dim))
    variables = head.init(jax.random.key(0), dummy, dummy[:, 0, 0], Placement.for_size(42, 42, 14), train=False)
    variables = {"params": _randomize(variables["params"], rng, 0.5),
                 "batch_stats": {"bn": {"mean": jnp.asarray(rng.normal(0, 0.1, 64), jnp.float32),
                                        "var": jnp.asarray(rng.uniform(0.5, 1.5, 64), jnp.float32)}}}
    return backbones, head, params, variables


_DIRECT = {}


def _direct(backbones, head, params, variables, image):
    """features + head on one (H, W, 3) image, centre-padded: (H, W, K) float64."""
    key = (id(backbones), id(head), image.shape)
    if key not in _DIRECT:
        placement = Placement.for_size(*image.shape[:2], 14)

        def run(params, variables, image):
            tokens, cls = backbones.features(params, placement.pad(image[None]))
            out = head.apply(variables, tokens, cls, placement, train=False)
            return out[0][..., None] if isinstance(out, tuple) else out

        _DIRECT[key] = (jax.jit(run), backbones, head)  # keep the objects alive: ids stay unique
    return np.asarray(_DIRECT[key][0](params, variables, jnp.asarray(image)), np.float64)[0]


def test_dense_predictor_whole_mode(seg_setup):
    backbones, head, params, variables = seg_setup
    image = np.random.default_rng(14).normal(size=(30, 44, 3)).astype(np.float32)
    label_size = (45, 61)
    prepared = inference.prepare(image, label_size, None, None)
    assert prepared.windows.shape == (1, 30, 44, 3) and prepared.valid.tolist() == [1.0]
    out = np.asarray(inference.DensePredictor(backbones, head, 14).predict(params, variables, prepared))
    assert out.shape == (64, 64, 4)
    direct = _direct(backbones, head, params, variables, image)
    want = torch_resize(direct[None], label_size)[0]
    np.testing.assert_allclose(out[:45, :61], want, atol=1e-4, rtol=1e-4)
    assert not out[45:].any() and not out[:, 61:].any()


def test_dense_predictor_normalises_uint8_windows_on_the_device(seg_setup):
    """Test images go to the device as uint8 windows: the maps of host-normalised windows, within
    float32 rounding (XLA compiles the normalisation into the model's program)."""
    backbones, head, params, variables = seg_setup
    image = np.random.default_rng(16).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    predictor = inference.DensePredictor(backbones, head, 14)
    on_device = inference.prepare(image, (40, 50), (28, 28), (19, 19))
    on_host = inference.prepare(normalize(image), (40, 50), (28, 28), (19, 19))
    assert on_device.windows.dtype == np.uint8 and on_device.windows.shape[0] > 1
    want = np.asarray(predictor.predict(params, variables, on_host))
    np.testing.assert_allclose(np.asarray(predictor.predict(params, variables, on_device)), want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_equal_predictors_share_their_compiled_programs(seg_setup):
    """Every evaluation builds its predictor: one equal to an earlier one must not trace again."""
    backbones, head, params, variables = seg_setup
    prepared = inference.prepare(np.random.default_rng(17).integers(0, 256, (30, 44, 3)).astype(np.uint8), (30, 44), None, None)
    programs = (inference.DensePredictor._model, inference.DensePredictor._heads)
    first = np.asarray(inference.DensePredictor(backbones, head, 14).predict(params, variables, prepared))
    traced = [p._cache_size() for p in programs]
    again = inference.DensePredictor(backbones, head, 14)
    np.testing.assert_array_equal(np.asarray(again.predict(params, variables, prepared)), first)
    assert [p._cache_size() for p in programs] == traced
    flipped = inference.DensePredictor(backbones, head, 14, flip=True)
    assert flipped != again
    flipped.predict(params, variables, prepared)
    assert [p._cache_size() for p in programs] == [n + 1 for n in traced]


def test_dense_predictor_slide_mode_matches_mmseg_averaging(seg_setup):
    backbones, head, params, variables = seg_setup
    image = np.random.default_rng(15).normal(size=(40, 50, 3)).astype(np.float32)
    crop, stride, label_size = (30, 30), (18, 18), (57, 71)
    prepared = inference.prepare(image, label_size, crop, stride)
    windows = mmseg_slide_windows(40, 50, crop, stride)
    assert len(windows) == 6 and prepared.windows.shape[0] == 8 and prepared.valid.sum() == 6
    out = np.asarray(inference.DensePredictor(backbones, head, 14).predict(params, variables, prepared))

    preds = np.zeros((40, 50, 4))
    count = np.zeros((40, 50, 1))
    for y1, y2, x1, x2 in windows:
        preds[y1:y2, x1:x2] += _direct(backbones, head, params, variables, image[y1:y2, x1:x2])
        count[y1:y2, x1:x2] += 1
    assert count.max() > 1  # the windows overlap
    want = torch_resize((preds / count)[None], label_size)[0]
    np.testing.assert_allclose(out[: label_size[0], : label_size[1]], want, atol=1e-4, rtol=1e-4)
    assert not out[label_size[0] :].any() and not out[:, label_size[1] :].any()


def test_dense_predictor_depth_whole_mode_is_clamped(tiny_vit):
    model, params = tiny_vit
    backbones = Backbones(model, "original", "depth")
    head = DepthHead(min_depth=1.0, max_depth=4.0, num_bins=16)
    rng = np.random.default_rng(16)
    dummy = jnp.zeros((1, 3, 3, 32))
    variables = head.init(jax.random.key(0), dummy, dummy[:, 0, 0], Placement.for_size(42, 42, 14), train=False)
    variables = {"params": _randomize(variables["params"], rng, 0.5)}
    image = rng.normal(size=(28, 33, 3)).astype(np.float32)
    prepared = inference.prepare(image, (20, 24), None, None)
    out = np.asarray(inference.DensePredictor(backbones, head, 14).predict(params, variables, prepared))
    assert out.shape == (64, 64, 1)
    direct = _direct(backbones, head, params, variables, image)
    want = torch_resize(np.clip(direct, 1.0, 4.0)[None], (20, 24))[0]
    np.testing.assert_allclose(out[:20, :24], want, atol=1e-4, rtol=1e-5)
    assert out[:20, :24].min() >= 1.0 - 1e-5 and out[:20, :24].max() <= 4.0 + 1e-5

    # The toolbox's flip test (aug_test): the mirrored image's prediction, clamped, mirrored back,
    # averaged with the plain one.
    flipped = np.asarray(inference.DensePredictor(backbones, head, 14, flip=True).predict(params, variables, prepared))
    mirrored = _direct(backbones, head, params, variables, np.ascontiguousarray(image[:, ::-1]))[:, ::-1]
    both = (np.clip(direct, 1.0, 4.0) + np.clip(mirrored, 1.0, 4.0)) / 2
    np.testing.assert_allclose(flipped[:20, :24], torch_resize(both[None], (20, 24))[0], atol=1e-4, rtol=1e-5)
    assert not np.allclose(flipped[:20, :24], out[:20, :24], atol=1e-3)  # the mirror image adds something


# ----------------------------------------------------------------------------------------------
# 8. Learning-rate schedule and optimizer
# ----------------------------------------------------------------------------------------------


def mmcv_lr(step, s: Schedule):
    """mmcv 1.5's LrUpdaterHook (lr_updater.py): Poly or CosineAnnealing, then the linear warm-up."""
    if s.policy == "cosine":
        target = s.learning_rate * s.min_lr_ratio
        regular = target + 0.5 * (s.learning_rate - target) * (math.cos(math.pi * step / s.iterations) + 1)
    else:
        regular = (s.learning_rate - s.min_lr) * (1 - step / s.iterations) ** s.power + s.min_lr
    if step >= s.warmup_iterations:
        return regular
    k = (1 - step / s.warmup_iterations) * (1 - s.warmup_ratio)
    return regular * (1 - k)


@pytest.mark.parametrize("schedule", [
    Schedule(learning_rate=1e-3, iterations=1000, warmup_iterations=100),
    Schedule(learning_rate=1e-4, iterations=38_400, warmup_iterations=12_800, power=0.9, min_lr=1e-6, warmup_ratio=1e-3),
])
def test_learning_rate_is_mmcv_poly_with_linear_warmup(schedule):
    lr = learning_rate(schedule)
    w, n = schedule.warmup_iterations, schedule.iterations
    for step in (1, 2, w // 2, w - 1, w, w + 1, (w + n) // 2, n - 1, n):
        assert float(lr(step)) == pytest.approx(mmcv_lr(step, schedule), rel=1e-4, abs=1e-12), step
    assert float(lr(0)) == pytest.approx(schedule.learning_rate * schedule.warmup_ratio, rel=1e-5)
    poly_at_w = (schedule.learning_rate - schedule.min_lr) * (1 - w / n) ** schedule.power + schedule.min_lr
    assert float(lr(w)) == pytest.approx(poly_at_w, rel=1e-6)
    assert float(lr(w // 2)) < float(lr(w))  # still warming up
    assert float(lr(n)) == pytest.approx(schedule.min_lr, abs=1e-12)


def test_learning_rate_is_mmcv_cosine_with_linear_warmup():
    s = Schedule(learning_rate=1e-4, iterations=38_400, warmup_iterations=12_800, warmup_ratio=1e-3, policy="cosine",
                 min_lr_ratio=1e-8)  # FiT3D's depth schedule
    lr = learning_rate(s)
    for step in (0, 1, 6400, 12_799, 12_800, 12_801, 25_000, 38_399, 38_400):
        assert float(lr(step)) == pytest.approx(mmcv_lr(step, s), rel=1e-4, abs=1e-15), step
    assert float(lr(38_400)) == pytest.approx(1e-12, rel=1e-3)
    assert float(lr(12_800)) < 1e-4 * 0.8  # the cosine has been decaying under the warm-up


def mmcv_one_cycle_momentum(step, iterations, base=0.85, peak=0.95, pct_start=0.3):
    """mmcv 1.5's OneCycleMomentumUpdaterHook.get_momentum (two phases, annealing_cos)."""
    cos = lambda start, end, factor: end + 0.5 * (start - end) * (math.cos(math.pi * factor) + 1)
    phases = [(float(pct_start * iterations) - 1, peak, base), (iterations - 1, base, peak)]
    start_iter = 0
    for i, (end_iter, start, end) in enumerate(phases):
        if step <= end_iter or i == len(phases) - 1:
            return cos(start, end, (step - start_iter) / (end_iter - start_iter))
        start_iter = end_iter


def test_one_cycle_beta1_is_mmcv_one_cycle_momentum():
    beta1 = one_cycle_beta1(38_400)
    for step in (0, 1, 5000, 11_518, 11_519, 11_520, 20_000, 38_399):
        assert float(beta1(step)) == pytest.approx(mmcv_one_cycle_momentum(step, 38_400), rel=1e-6), step
    assert float(beta1(0)) == pytest.approx(0.95) and float(beta1(11_519)) == pytest.approx(0.85)


def test_onecycle_optimizer_matches_torch_adamw_with_mmcv_hooks():
    """AdamW as FiT3D's depth runs it: torch's AdamW, whose lr and betas[0] the mmcv hooks set
    before every iteration, and gradient clipping at max_norm."""
    s = Schedule(learning_rate=1e-2, weight_decay=0.01, iterations=12, warmup_iterations=4, warmup_ratio=1e-3,
                 policy="cosine", min_lr_ratio=1e-8, momentum="onecycle", clip_norm=35.0)
    opt = optimizer(s)
    rng = np.random.default_rng(19)
    w0 = rng.normal(size=(5,))
    params = {"w": jnp.asarray(w0, jnp.float32)}
    state = opt.init(params)
    torch_w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    torch_opt = torch.optim.AdamW([torch_w], lr=s.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    for step in range(s.iterations):
        g = rng.normal(size=5) * (50.0 if step == 3 else 1e-2)  # one step beyond the clip
        for group in torch_opt.param_groups:
            group["lr"] = mmcv_lr(step, s)
            group["betas"] = (mmcv_one_cycle_momentum(step, s.iterations), 0.999)
        torch_w.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_([torch_w], 35.0)
        torch_opt.step()
        updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = {"w": params["w"] + updates["w"]}
        np.testing.assert_allclose(np.asarray(params["w"]), torch_w.detach().numpy(), rtol=2e-5, atol=1e-7)


def test_learning_rate_warmup_start_is_accurate():
    s = Schedule()  # the segmentation protocol: lr 1e-3, warm-up ratio 1e-6
    lr = learning_rate(s)
    for step in (0, 1, 2):
        assert float(lr(step)) == pytest.approx(mmcv_lr(step, s), rel=1e-5), step


@pytest.mark.parametrize("clip", [0.0, 1e-6])
def test_optimizer_is_adamw_on_the_schedule(clip):
    s = Schedule(learning_rate=1e-2, weight_decay=0.1, iterations=20, warmup_iterations=3, clip_norm=clip)
    opt = optimizer(s)
    rng = np.random.default_rng(17)
    params = {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
    state = opt.init(params)
    p = np.asarray(params["w"], np.float64)
    m = v = np.zeros(4)
    for t in range(4):
        g = rng.normal(size=4) * 1e-3
        updates, state = opt.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
        params = {"w": params["w"] + updates["w"]}
        if clip:
            g = g * min(1.0, clip / np.linalg.norm(g))
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        m_hat, v_hat = m / (1 - 0.9 ** (t + 1)), v / (1 - 0.999 ** (t + 1))
        p = p - mmcv_lr(t, s) * (m_hat / (np.sqrt(v_hat) + 1e-8) + 0.1 * p)
        np.testing.assert_allclose(np.asarray(params["w"]), p, rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# 9. Augmentation
# ----------------------------------------------------------------------------------------------


def test_keep_ratio_size_examples():
    assert augment.keep_ratio_size(512, 683, (2048, 512)) == (512, 683)
    assert augment.keep_ratio_size(1000, 300, (2048, 512)) == (1707, 512)  # short side limits
    assert augment.keep_ratio_size(300, 5000, (2048, 512)) == (123, 2048)  # long side limits
    assert augment.keep_ratio_size(256, 341, (2048, 512)) == (512, 682)
    assert augment.keep_ratio_size(480, 640, (1024, 256)) == (256, 341)


def test_segmentation_train_ratio_scale_is_truncated_as_mmseg():
    # scale (20, 10), ratio 0.75: mmseg samples scale (15, 7) -> a 10 x 13 image becomes 7 x 9;
    # with the untruncated (15, 7.5) it becomes 8 x 10.
    labels = np.zeros((10, 13), np.int32)
    image = np.full((10, 13, 3), 100, np.uint8)
    a = augment.Augment(crop=(16, 16), scale=(20, 10), ratio_range=(0.75, 0.75), cat_max_ratio=1.0, photometric=False)
    _, out_labels = augment.segmentation_train(image, labels, np.random.default_rng(0), a)
    rows, cols = np.nonzero(out_labels != IGNORE)
    assert (rows.max() + 1, cols.max() + 1) == (7, 9)



@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_a_rows_draws_depend_on_its_row_only(task):
    """Row r's draws are the same whatever the other rows' shapes, and when a process draws only
    rows skip.. (the stream is the global batch's)."""
    draw = augment.segmentation_draws if task == "segmentation" else augment.depth_draws
    a = augment.Augment(crop=(32, 40), scale=(80, 40) if task == "segmentation" else (0, 0), rotate_prob=0.5, color_prob=0.5)
    shapes = np.array([(60, 90), (50, 70), (64, 48), (45, 45), (70, 100)])
    full = draw(shapes, np.random.default_rng(3), a)
    other = draw(np.concatenate([[(300, 20)], shapes[1:]]), np.random.default_rng(3), a)
    tail = draw(shapes[2:], np.random.default_rng(3), a, skip=2)
    for k in range(1, len(shapes)):
        for ours, theirs in zip(full.row(k), other.row(k)):
            np.testing.assert_array_equal(ours, theirs)
        for ours, theirs in zip(full.row(k), tail.row(k - 2) if k >= 2 else full.row(k)):
            np.testing.assert_array_equal(ours, theirs)


def test_segmentation_draws_cover_their_ranges():
    """Over many rows: every crop origin in [0, size - crop] (both ends reached), hue deltas in
    [-18, 17], contrast before and after, each flip and distortion applied about half the time."""
    a = augment.Augment(crop=(40, 40), scale=(42, 42), ratio_range=(1.0, 1.0))
    d = augment.segmentation_draws([(42, 42)] * 2000, np.random.default_rng(4), a)
    assert (d.size == 42).all() and set(np.unique(d.origins)) == {0, 1, 2}
    p = d.photometric
    assert set(np.unique(p[:, 8])) == set(range(-18, 18)) and set(np.unique(p[:, 2])) == {0, 1}
    assert -32 <= p[:, 1].min() < -31 and 31 < p[:, 1].max() < 32 and 0.5 <= p[:, 4].min() and p[:, 4].max() < 1.5
    for share in (d.flip.mean(), *p[:, [0, 3, 5, 7]].mean(0)):
        assert 0.45 < share < 0.55
PALETTE = np.random.default_rng(99).permutation(np.arange(30, 250, 10))[:12]


def _coded_example(rng, shape, num_classes=6):
    """labels (some ignored) and an image whose red channel encodes the label."""
    labels = rng.integers(0, num_classes, shape).astype(np.int32)
    labels[rng.random(shape) < 0.1] = IGNORE
    image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
    image[..., 0] = np.where(labels == IGNORE, 255, PALETTE[np.minimum(labels, num_classes)])
    return image, labels


def _denormalize(x):
    return np.rint((x * IMAGENET_STD + IMAGENET_MEAN) * 255).astype(np.int64)


def test_segmentation_train_smaller_than_crop_pads_and_flips():
    rng = np.random.default_rng(30)
    image, labels = _coded_example(rng, (20, 26))
    # scale (26, 20) with ratio 1: the keep-ratio resize keeps the size; the crop (32, 40) is larger
    a = augment.Augment(crop=(32, 40), scale=(26, 20), ratio_range=(1.0, 1.0), photometric=False, flip_prob=1.0)
    out_image, out_labels = augment.segmentation_train(image, labels, np.random.default_rng(0), a)
    assert out_image.shape == (32, 40, 3) and out_image.dtype == np.float32
    assert out_labels.shape == (32, 40) and out_labels.dtype == np.int32
    np.testing.assert_array_equal(out_labels[:20, :26], labels[:, ::-1])
    np.testing.assert_allclose(out_image[:20, :26], normalize(image[:, ::-1].copy()), atol=1e-6)
    assert (out_labels[20:] == IGNORE).all() and (out_labels[:, 26:] == IGNORE).all()
    assert not out_image[20:].any() and not out_image[:, 26:].any()
    # without flipping
    a = augment.Augment(crop=(32, 40), scale=(26, 20), ratio_range=(1.0, 1.0), photometric=False, flip_prob=0.0)
    out_image, out_labels = augment.segmentation_train(image, labels, np.random.default_rng(0), a)
    np.testing.assert_array_equal(out_labels[:20, :26], labels)
    np.testing.assert_allclose(out_image[:20, :26], normalize(image), atol=1e-6)


def test_segmentation_train_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(31)
    image, labels = _coded_example(rng, (48, 64))
    a = augment.Augment(crop=(24, 32), scale=(64, 48), ratio_range=(1.0, 1.0), photometric=False, flip_prob=0.5)
    flipped_seen = unflipped_seen = 0
    for seed in range(12):
        out_image, out_labels = augment.segmentation_train(image, labels, np.random.default_rng(seed), a)
        assert out_image.shape == (24, 32, 3) and out_labels.shape == (24, 32)
        red = _denormalize(out_image)[..., 0]
        expected = np.where(out_labels == IGNORE, 255, PALETTE[np.minimum(out_labels, 6)])
        np.testing.assert_array_equal(red, expected)
        # locate the window in the source to see whether it was flipped
        for top in range(48 - 24 + 1):
            for left in range(64 - 32 + 1):
                window = labels[top : top + 24, left : left + 32]
                if np.array_equal(window, out_labels):
                    unflipped_seen += 1
                elif np.array_equal(window[:, ::-1], out_labels):
                    flipped_seen += 1
    assert flipped_seen and unflipped_seen and flipped_seen + unflipped_seen == 12


def test_segmentation_train_with_resize_stays_aligned_and_is_deterministic():
    rng = np.random.default_rng(32)
    # large blocks of one class, so that bilinear image resizing only mixes colours at edges
    blocks = rng.integers(0, 6, (6, 8)).astype(np.int32)
    labels = np.kron(blocks, np.ones((10, 10), np.int32))
    image = np.zeros((60, 80, 3), np.uint8)
    image[..., 0] = PALETTE[labels]
    image[..., 1:] = 128
    a = augment.Augment(crop=(48, 48), scale=(80, 60), ratio_range=(0.5, 2.0), photometric=False)
    for seed in range(4):
        out_image, out_labels = augment.segmentation_train(image, labels, np.random.default_rng(seed), a)
        assert out_image.shape == (48, 48, 3) and out_labels.shape == (48, 48)
        known = out_labels != IGNORE
        red = _denormalize(out_image)[..., 0]
        agree = red[known] == PALETTE[out_labels[known]]
        assert agree.mean() > 0.8

    a = augment.Augment(crop=(32, 32), scale=(80, 60))  # photometric distortion on
    first = augment.segmentation_train(image, labels, np.random.default_rng(7), a)
    second = augment.segmentation_train(image, labels, np.random.default_rng(7), a)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    others = [augment.segmentation_train(image, labels, np.random.default_rng(s), a)[0] for s in (8, 9, 10)]
    assert any(not np.array_equal(first[0], o) for o in others)


def test_depth_train_shapes_padding_and_determinism():
    rng = np.random.default_rng(33)
    image = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    depth = rng.uniform(0.5, 5.0, (20, 30)).astype(np.float32)
    a = augment.Augment(crop=(32, 40), scale=(0, 0))
    out_image, out_depth = augment.depth_train(image, depth, np.random.default_rng(1), a)
    assert out_image.shape == (32, 40, 3) and out_depth.shape == (32, 40)
    assert out_image.dtype == np.float32 and out_depth.dtype == np.float32
    assert not out_depth[20:].any() and not out_depth[:, 30:].any()
    assert not out_image[20:].any() and not out_image[:, 30:].any()
    assert (out_depth[:20, :30] > 0).mean() > 0.8  # rotation by <= 2.5 degrees loses only corners
    again = augment.depth_train(image, depth, np.random.default_rng(1), a)
    np.testing.assert_array_equal(out_image, again[0])
    np.testing.assert_array_equal(out_depth, again[1])

    # no rotation / colour change: the output is a (possibly flipped) crop of the inputs, aligned
    a = augment.Augment(crop=(12, 16), rotate_prob=0.0, color_prob=0.0, flip_prob=0.5)
    coded = image.copy()
    coded[..., 0] = (depth * 40).astype(np.uint8)
    for seed in range(6):
        out_image, out_depth = augment.depth_train(coded, depth, np.random.default_rng(seed), a)
        assert out_depth.shape == (12, 16)
        np.testing.assert_array_equal(_denormalize(out_image)[..., 0], (out_depth * 40).astype(np.uint8))


@pytest.mark.parametrize("mode", ["raw", "unit"])
def test_depth_colour_augmentation(mode):
    """FiT3D's ColorAug (depth/datasets/pipelines/transforms.py) powers the 0-255 values, scales,
    clips and keeps floats; "unit" powers [0, 1] values."""
    rng = np.random.default_rng(34)
    image = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    depth = np.ones((10, 12), np.float32)
    a = augment.Augment(crop=(10, 12), rotate_prob=0.0, flip_prob=0.0, color_prob=1.0, gamma_range=(1.1, 1.1),
                        brightness_range=(0.9, 0.9), color_range=(1.05, 1.05), color_gamma=mode)
    out, _ = augment.depth_train(image, depth, np.random.default_rng(0), a)
    x = image.astype(np.float64)
    want = np.clip(x**1.1 * 0.9 * 1.05, 0, 255) if mode == "raw" else np.clip((x / 255) ** 1.1 * 0.9 * 1.05, 0, 1) * 255
    np.testing.assert_allclose(out, (want / 255 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-5)


def _device_batch(task, image, target, seeds, a, fill, statistics="imagenet"):
    """The host part of one sample's draws from each seed, padded and stacked, finished by
    device_augment.finish_batch."""
    rows = []
    for seed in seeds:
        if task == "segmentation":
            draws = augment.segmentation_draws([target.shape], np.random.default_rng(seed), a).row(0)
            (crop, target_crop), colour = augment.segmentation_crop(image, target, draws, a), augment.NO_COLOUR
        else:
            draws = augment.depth_draws([target.shape], np.random.default_rng(seed), a).row(0)
            (crop, target_crop), colour = augment.depth_crop(image, target, draws, a), draws.colour
        rows.append((*augment.pad(crop, target_crop, a.crop, fill), np.array(crop.shape[:2], np.int32), colour.astype(np.float32)))
    crops, targets, sizes, colours = (np.stack(c) for c in zip(*rows))
    return np.asarray(jax.jit(device_augment.finish_batch, static_argnums=(3, 4))(crops, sizes, colours, a, statistics)), targets


@pytest.mark.parametrize("statistics", ["imagenet", "openai_clip"])
def test_the_device_finish_equals_the_host_segmentation_pipeline(statistics):
    """Host crops finished on the device = the whole numpy pipeline: same decisions from the same
    draws (labels identical) and the same float32 normalisation (images identical), padding zero."""
    rng = np.random.default_rng(36)
    image = rng.integers(0, 256, (30, 44, 3)).astype(np.uint8)
    labels = np.kron(rng.integers(0, 5, (3, 4)), np.ones((10, 11), np.int64)).astype(np.int32)
    a = augment.Augment(crop=(24, 32), scale=(44, 30), ratio_range=(0.5, 2.0))
    seeds = range(8)
    images, targets = _device_batch("segmentation", image, labels, seeds, a, IGNORE, statistics)
    for k, seed in enumerate(seeds):
        want_image, want_labels = augment.segmentation_train(image, labels, np.random.default_rng(seed), a, statistics)
        np.testing.assert_array_equal(targets[k], want_labels)
        np.testing.assert_allclose(images[k], want_image, rtol=0, atol=2e-6)  # at most float32 rounding of one op
    assert (targets == IGNORE).any(), "no sample was smaller than the crop: padding untested"


@pytest.mark.parametrize("mode", ["raw", "unit"])
def test_the_device_finish_equals_the_host_depth_pipeline(mode):
    """Rotation, flip and crop on the host; ColorAug (float32 here, float64 in FiT3D's numpy code)
    and normalisation on the device: within 1e-5 in normalised units, padding zero."""
    rng = np.random.default_rng(37)
    image = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    depth = rng.uniform(0.5, 5.0, (20, 30)).astype(np.float32)
    a = augment.Augment(crop=(24, 28), scale=(0, 0), color_prob=0.5, color_gamma=mode)
    seeds = range(10)
    images, targets = _device_batch("depth", image, depth, seeds, a, 0.0)
    coloured = 0
    for k, seed in enumerate(seeds):
        want_image, want_depth = augment.depth_train(image, depth, np.random.default_rng(seed), a)
        np.testing.assert_array_equal(targets[k], want_depth)
        np.testing.assert_allclose(images[k], want_image, rtol=0, atol=1e-5)
        coloured += bool(augment.depth_draws([depth.shape], np.random.default_rng(seed), a).colour[0, 0])
    assert 0 < coloured < len(seeds)
    assert not images[:, 20:].any() and not images[:, :, 28:].any()


def test_both_pipelines_normalise_with_the_models_statistics():
    """The same draws under OpenAI's CLIP statistics give the same pixels, normalised with them
    (a CLIP backbone with config.input_statistics=model); padding stays zero."""
    rng = np.random.default_rng(35)
    image = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    labels, depth = rng.integers(0, 4, (20, 30)).astype(np.int32), rng.uniform(0.5, 5.0, (20, 30)).astype(np.float32)
    a = augment.Augment(crop=(24, 40), scale=(30, 20))
    (clip_mean, clip_std), (mean, std) = STATISTICS["openai_clip"], STATISTICS["imagenet"]
    for transform, target in ((augment.segmentation_train, labels), (augment.depth_train, depth)):
        ours, _ = transform(image, target, np.random.default_rng(2), a)
        clip, clip_target = transform(image, target, np.random.default_rng(2), a, "openai_clip")
        np.testing.assert_array_equal(clip_target, _)
        pixels = ours * std + mean
        np.testing.assert_allclose(clip, np.where(ours != 0, (pixels - clip_mean) / clip_std, 0), atol=1e-5)
    white = np.full((1, 1, 3), 255, np.uint8)
    np.testing.assert_allclose(normalize(white, "openai_clip")[0, 0], (1 - clip_mean) / clip_std, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# The depth task glues sig + 0.5 gradient loss and the evaluation range
# ----------------------------------------------------------------------------------------------


def _depth_dataset():
    empty = Split("empty", 0, lambda i: None)
    return Dataset("stub", DEPTH, empty, empty, min_depth=0.5, max_depth=8.0)


def fit3d_gradient_loss(pred, gt):
    """The toolbox's GradientLoss as FiT3D calls it (gradientloss.py, max_depth None), on the
    (B, 1, H, W) tensors its head hands it: the slicing lands on the batch and channel axes."""
    x, t = (torch.as_tensor(a, dtype=torch.float64)[:, None] for a in (pred, gt))
    total = 0.0
    for inp, tgt in zip([x] + [x[:: 2 * i, :: 2 * i] for i in range(1, 4)], [t] + [t[:: 2 * i, :: 2 * i] for i in range(1, 4)]):
        mask = tgt > 0
        d = (torch.log(inp + 1e-3) - torch.log(tgt + 1e-3)) * mask
        v = torch.abs(d[0:-2, :] - d[2:, :]) * mask[0:-2, :] * mask[2:, :]
        h = torch.abs(d[:, 0:-2] - d[:, 2:]) * mask[:, 0:-2] * mask[:, 2:]
        total = total + (torch.sum(h) + torch.sum(v)) / torch.sum(mask)
    return float(total)


def _depth_backbones():
    return Backbones(DinoV2(ViTConfig(embed_dim=8, depth=1, num_heads=1)), "original", "depth")


def _depth_task(**protocol):
    return DepthTask(_depth_dataset(), _depth_backbones(), Protocol(**protocol, sigloss_warmup=5))


def test_depth_task_loss_and_reduce():
    """FiT3D's loss on a batch of 4 over 2 GPUs: per GPU, SigLoss + 0.5 GradientLoss over its 2
    images (valid: gt > 0), averaged over the GPUs."""
    task = _depth_task()
    rng = np.random.default_rng(40)
    pred, gt, _ = _depth_pair(rng, (4, 9, 10), 8.0)
    loss = jax.jit(lambda depth, target, step: task.loss((depth, None), target, step))
    for step, warm in ((0, True), (4, True), (5, False)):
        per_gpu = [torch_sigloss(pred[i : i + 2], gt[i : i + 2], np.inf, warm) + 0.5 * fit3d_gradient_loss(pred[i : i + 2], gt[i : i + 2])
                   for i in (0, 2)]
        assert fit3d_gradient_loss(pred[:2], gt[:2]) == 0.0
        assert float(loss(jnp.asarray(pred), jnp.asarray(gt), jnp.asarray(step))) == pytest.approx(np.mean(per_gpu), rel=1e-5)
    # one pool over the batch, plus this project's per-image gradient loss
    task = _depth_task(depth_loss="sigloss+gradient", depth_loss_group=0)
    loss = jax.jit(lambda depth, target: task.loss((depth, None), target, 10))
    want = torch_sigloss(pred, gt, np.inf, False) + 0.5 * torch_gradient_loss(pred, gt, np.inf)
    assert float(loss(jnp.asarray(pred), jnp.asarray(gt))) == pytest.approx(want, rel=1e-5)
    task = _depth_task()

    # evaluation counts min < gt < max inside the mask only
    gt2 = np.array([[0.5, 1.0, 2.0], [8.0, 4.0, 9.0]], np.float32)
    mask = np.array([[True, True, False], [True, True, True]])
    pred2 = np.full((2, 3, 1), 2.0, np.float32)
    sums, count = task.reduce(jnp.asarray(pred2), jnp.asarray(gt2), jnp.asarray(mask))
    want, n = _numpy_depth_metrics(pred2[None, ..., 0], gt2[None], (mask & (gt2 > 0.5) & (gt2 < 8.0))[None])
    assert int(count) == n == 1
    np.testing.assert_allclose(np.asarray(sums), want, rtol=1e-5)
    with pytest.raises(ValueError, match="depth_loss"):
        make_task(_depth_dataset(), _depth_backbones(), Protocol(depth_loss="l1"))
