"""On the GPU: the CUDA build of the fused segmentation loss agrees with the CPU build (and with
XLA's plain loss) in the loss and its gradient, from toy grids to ADE20K's 150 classes on a
512x512 crop; and a row too large for shared memory gets an error, not a wrong result.

Tolerances: both builds compute in float32 but differ in the order of the softmax's sums (a
warp's shuffles against a loop) and in exp (the GPU's __expf, ~2 ulp): 1e-5 relative is allowed,
~1e-6 expected."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fit3d_jax import kernels
from fit3d_jax.probe import fused_loss
from fit3d_jax.probe.heads import Placement
from fit3d_jax.probe.metrics import IGNORE_INDEX

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(jax.default_backend() != "gpu" or not kernels.available("cuda"), reason="needs CUDA kernels"),
]

CASES = [(1, 28, 28, 3, "stretch"), (2, 50, 61, 7, "crop"), (3, 97, 131, 40, "stretch"), (2, 512, 512, 150, "stretch"),
         (1, 480, 640, 150, "crop"), (1, 64, 700, 21, "stretch"), (1, 70, 90, 256, "crop"), (1, 42, 42, 33, "stretch")]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def loss_and_grad(loss, logits, labels, placement, resize):
    return jax.jit(jax.value_and_grad(lambda x: loss(x, labels, placement, resize, False)))(logits)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_cuda_matches_cpu_build(case, seed):
    batch, height, width, classes, resize = case
    rng = np.random.default_rng(seed)
    placement = Placement.for_size(height, width, 14)
    grid = (placement.padded_height // 14, placement.padded_width // 14)
    logits = (3 * rng.normal(size=(batch, *grid, classes))).astype(np.float32)
    labels = rng.integers(0, classes, (batch, height, width)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = IGNORE_INDEX
    cpu_device = jax.devices("cpu")[0]
    gpu = loss_and_grad(fused_loss.resized_cross_entropy, logits, labels, placement, resize)
    plain = loss_and_grad(fused_loss.reference_cross_entropy, logits, labels, placement, resize)
    cpu = loss_and_grad(fused_loss.resized_cross_entropy, *(jax.device_put(x, cpu_device) for x in (logits, labels)), placement, resize)
    assert next(iter(gpu[1].devices())).platform == "gpu" and next(iter(cpu[1].devices())).platform == "cpu"
    errors = {"loss": rel_err(gpu[0], cpu[0]), "grad": rel_err(gpu[1], cpu[1]),
              "loss_vs_xla": rel_err(gpu[0], plain[0]), "grad_vs_xla": rel_err(gpu[1], plain[1])}
    print(f"{case} seed {seed}: " + ", ".join(f"{n} {e:.1e}" for n, e in errors.items()))
    assert all(e < 1e-5 for e in errors.values()), (seed, errors)


def test_a_row_too_large_for_shared_memory_is_refused():
    placement = Placement.for_size(28, 14 * 240, 14)  # 240 columns x 256 classes: 240 KiB of logits
    logits, labels = jnp.zeros((1, 2, 240, 256), jnp.float32), jnp.zeros((1, 28, 3360), jnp.int32)
    with pytest.raises(Exception, match="needs more shared memory.*fused_loss=False"):
        jax.block_until_ready(jax.grad(lambda x: fused_loss.resized_cross_entropy(x, labels, placement))(logits))
