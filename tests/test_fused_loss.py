"""The fused segmentation loss (CPU build of the kernel) against the plain loss it replaces,
``fused_loss.reference_cross_entropy`` (resize, then the masked cross-entropy): the loss and its
gradient on fixed inputs and edge cases, against finite differences, on a sharded batch, and the
errors bad operands get."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fit3d_jax.probe import fused_loss
from fit3d_jax.probe.heads import Placement
from fit3d_jax.probe.metrics import IGNORE_INDEX

CASES = [  # (height, width, classes, resize): square and odd crops, a grid as wide as the image
    (56, 56, 5, "stretch"), (50, 61, 7, "stretch"), (50, 61, 7, "crop"), (31, 100, 3, "crop"), (14, 14, 4, "stretch"),
]


def inputs(rng, height, width, classes, batch=2, ignored=0.3):
    placement = Placement.for_size(height, width, 14)
    grid = (placement.padded_height // 14, placement.padded_width // 14)
    logits = (3 * rng.normal(size=(batch, *grid, classes))).astype(np.float32)
    labels = rng.integers(0, classes, (batch, height, width))
    labels[rng.random(labels.shape) < ignored] = IGNORE_INDEX
    return jnp.asarray(logits), jnp.asarray(labels, jnp.int32), placement


def both(logits, labels, placement, resize, all_pixels=True):
    fused = jax.value_and_grad(lambda x: fused_loss.resized_cross_entropy(x, labels, placement, resize, all_pixels))(logits)
    plain = jax.value_and_grad(lambda x: fused_loss.reference_cross_entropy(x, labels, placement, resize, all_pixels))(logits)
    return fused, plain


def assert_close(fused, plain, rtol=2e-6):
    (a, ga), (b, gb) = fused, plain
    np.testing.assert_allclose(float(a), float(b), rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=0, atol=rtol * float(np.abs(gb).max()) + 1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("all_pixels", [True, False])
def test_matches_the_plain_loss(case, all_pixels, rng):
    height, width, classes, resize = case
    logits, labels, placement = inputs(rng, height, width, classes)
    fused, plain = both(logits, labels, placement, resize, all_pixels)
    assert float(plain[0]) > 0 and float(np.abs(plain[1]).max()) > 0
    assert_close(fused, plain)


def test_labels_outside_the_classes_pick_no_score(rng):
    """A valid label the head has no class for adds logsumexp and softmax gradients only, as in the
    plain loss (the datasets' readers refuse such labels; the kernel must not read past the row)."""
    logits, labels, placement = inputs(rng, 30, 30, 4)
    labels = labels.at[:, :5].set(7).at[:, 5:8].set(-3)
    assert_close(*both(logits, labels, placement, "stretch"))


def test_everything_ignored_gives_zero_loss_and_gradient(rng):
    logits, labels, placement = inputs(rng, 28, 40, 3, ignored=1.0)
    for all_pixels in (True, False):
        loss, grad = both(logits, labels, placement, "stretch", all_pixels)[0]
        assert float(loss) == 0.0 and not np.any(np.asarray(grad))


def test_a_nan_logit_gives_a_nan_loss(rng):
    """Non-finite values surface (the training guard stops on them) instead of being skipped."""
    logits, labels, placement = inputs(rng, 28, 28, 3, ignored=0.0)
    loss, grad = both(logits.at[0, 1, 1, 2].set(np.nan), labels, placement, "stretch")[0]
    assert np.isnan(float(loss)) and np.isnan(np.asarray(grad)).any()


def test_gradient_matches_finite_differences(rng):
    logits, labels, placement = inputs(rng, 42, 33, 5, ignored=0.2)
    loss = jax.jit(lambda x: fused_loss.resized_cross_entropy(x, labels, placement, "crop"))
    grad = np.asarray(jax.grad(loss)(logits))
    for _ in range(4):
        direction = rng.normal(size=logits.shape).astype(np.float32)
        eps = 1e-2
        numeric = (float(loss(logits + eps * direction)) - float(loss(logits - eps * direction))) / (2 * eps)
        np.testing.assert_allclose(numeric, float(np.sum(grad * direction)), rtol=2e-3, atol=1e-5)


def test_bf16_logits_get_a_bf16_gradient(rng):
    logits, labels, placement = inputs(rng, 28, 28, 3)
    grad = jax.grad(lambda x: fused_loss.resized_cross_entropy(x, labels, placement))(logits.astype(jnp.bfloat16))
    assert grad.dtype == jnp.bfloat16


def test_more_classes_than_the_cuda_kernel_takes_use_the_plain_loss(rng):
    def calls_kernel(classes: int) -> bool:
        logits, labels, placement = inputs(rng, 14, 14, classes)
        return "fit3d_cross_entropy" in str(jax.make_jaxpr(lambda x: fused_loss.resized_cross_entropy(x, labels, placement))(logits))

    assert calls_kernel(fused_loss.MAX_CLASSES) and not calls_kernel(fused_loss.MAX_CLASSES + 1)


def test_wrong_label_shape_is_refused(rng):
    logits, labels, placement = inputs(rng, 28, 28, 3)
    with pytest.raises(AssertionError, match="shape"):
        fused_loss.resized_cross_entropy(logits, labels[:, :-1], placement)


def kernel_call(rows, labels, taps):
    with jax.default_device(jax.devices("cpu")[0]):  # the CPU build, also on a GPU machine
        return fused_loss._kernel(jnp.asarray(rows), jnp.asarray(labels), taps)


def test_bad_operands_get_errors_naming_them():
    """The CPU build checks the taps and segments (the CUDA build trusts fused_loss's), both
    builds the shapes."""
    rows, labels = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 10), np.int32)
    index, weight, segments = fused_loss.width_taps(10, 3, 0, 10)
    assert kernel_call(rows, labels, (index, weight, segments))[1].shape == rows.shape
    for taps, message in [
        ((np.where(index == 2, 1, index).astype(np.int32), weight, segments), "tap_index row 8 does not continue column 2"),
        ((index, weight, segments[::-1].copy()), "segments must start at 0 and end at out_width"),
        ((index, weight, np.array([0, 5, 3, 10], np.int32)), "segments must ascend"),
        ((index[:9], weight[:9], segments), "tap_index and tap_weight must be"),
        ((index, weight, segments[:3]), "segments must be"),
    ]:
        with pytest.raises(Exception, match=message):
            jax.block_until_ready(kernel_call(rows, labels, taps))


SHARDED = """
import sys, numpy as np, jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from fit3d_jax.harness.mesh import data_mesh
from fit3d_jax.probe import fused_loss
from fit3d_jax.probe.heads import Placement
rng = np.random.default_rng(0)
placement = Placement.for_size(30, 44, 14)
logits = jnp.asarray(rng.normal(size=(4, 3, 4, 6)).astype(np.float32))
labels = jnp.asarray(rng.integers(0, 6, (4, 30, 44)), jnp.int32)
mesh = data_mesh()
assert mesh.size == 2
fn = lambda m: jax.jit(jax.value_and_grad(lambda x, y: fused_loss.resized_cross_entropy(x, y, placement, "stretch", False, m)))
put = lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
(a, ga), (b, gb) = fn(mesh)(put(logits), put(labels)), fn(None)(logits, labels)
hlo = fn(mesh).lower(put(logits), put(labels)).compile().as_text()
assert "all-gather" not in hlo, "the kernel's operands were gathered"
np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=0, atol=1e-6 * float(np.abs(gb).max()))
print("ok")
"""


def test_a_sharded_batch_runs_the_kernel_per_device():
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
