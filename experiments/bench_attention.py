"""Float32 softmax attention alone, at DINOv2 ViT-S/14's shapes for a 574x868 image (2543 tokens,
6 heads of 64): fit3d_jax's fused FFI kernel, XLA's attention (what the model used before) and
PyTorch's scaled_dot_product_attention (what timm calls; in float32 it picks the
memory-efficient kernel), in one process on one GPU.

Cells: forward at batch 32 and forward+backward (gradients of sum(out * g) for q, k, v) at batch
8, the ViT benchmark's batches. Also the error of each against a float64 PyTorch reference on
the first batch element (max |error| over max |value|).

    python experiments/bench_attention.py --out experiments/results/bench_attention_h100.json
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU with PyTorch

import argparse
import datetime
import json
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

from fit3d_jax.models.dinov2 import xla_attention
from fit3d_jax.models.fused_attention import fused_attention
from timing import median_ms


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokens", type=int, default=2543)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--forward-batch", type=int, default=32)
    parser.add_argument("--backward-batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--implementations", default="fused,xla,torch")
    return parser.parse_args()


def xla_float32(q, k, v):
    with jax.default_matmul_precision("float32"):  # as the model runs it: true float32 dots
        return xla_attention(q, k, v)


def jax_fn(name: str, backward: bool):
    attention = fused_attention if name == "fused" else xla_float32
    if not backward:
        return jax.jit(attention)
    loss = lambda q, k, v, g: jnp.sum(attention(q, k, v) * g)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def torch_step(q, k, v, g, backward: bool):
    q, k, v = (x.detach().requires_grad_(backward) for x in (q, k, v))
    if not backward:
        with torch.no_grad():
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.nn.functional.scaled_dot_product_attention(q, k, v).backward(g)
    return q.grad, k.grad, v.grad


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def run_torch(inputs: list[np.ndarray], backward: bool, runs: int) -> tuple[float, list[np.ndarray]]:
    """(median ms, outputs on batch element 0 as (N, T, H))."""
    tq, tk, tv, tg = (torch.from_numpy(x).cuda().transpose(1, 2).contiguous() for x in inputs)
    ms = median_ms(lambda: torch_step(tq, tk, tv, tg, backward), lambda _: torch.cuda.synchronize(),
                   warmup=3, runs=runs)
    out = torch_step(tq[:1], tk[:1], tv[:1], tg[:1], backward)
    return ms, [o[0].cpu().numpy() for o in out] if backward else [out[0].cpu().numpy()]


def run_jax(name: str, inputs: list[np.ndarray], backward: bool, runs: int) -> tuple[float, list[np.ndarray]]:
    fn = jax_fn(name, backward)
    dev = [jax.device_put(x) for x in (inputs if backward else inputs[:3])]
    ms = median_ms(lambda: fn(*dev), jax.block_until_ready, warmup=3, runs=runs)
    out = fn(*(x[:1] for x in dev))
    return ms, [np.asarray(o[0]).transpose(1, 0, 2) for o in (out if backward else [out])]


def main() -> None:
    args = parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(0)
    results = []
    for mode, batch in (("forward", args.forward_batch), ("fwd+bwd", args.backward_batch)):
        backward = mode == "fwd+bwd"
        shape = (batch, args.tokens, args.heads, 64)
        inputs = [rng.normal(size=shape).astype(np.float32) for _ in range(4)]  # q, k, v, g
        # float64 reference on batch element 0 (outputs; gradients under fwd+bwd), (N, T, H).
        ref_in = [torch.from_numpy(x[0]).cuda().double().transpose(0, 1) for x in inputs]
        ref_out = torch_step(*ref_in, backward)
        reference = [r.cpu().numpy() for r in ref_out] if backward else [ref_out.cpu().numpy()]
        for name in args.implementations.split(","):
            if name == "torch":
                ms, got = run_torch(inputs, backward, args.runs)
            else:
                ms, got = run_jax(name, inputs, backward, args.runs)
            errors = [relative_error(a, b) for a, b in zip(got, reference)]
            row = {"implementation": name, "mode": mode, "batch": batch, "ms": ms,
                   "error_vs_float64": max(errors), "errors": errors}
            print(json.dumps(row), flush=True)
            results.append(row)
    record = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(),
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "torch": torch.__version__},
        "shape": {"tokens": args.tokens, "heads": args.heads, "head_dim": 64},
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
