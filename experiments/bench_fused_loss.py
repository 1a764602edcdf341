"""The segmentation training loss alone, forward and gradient: the fused FFI kernel against XLA's
resize-then-cross-entropy, on one device, with their agreement; and the kernel's call alone. Grid logits of a (crop / 14)
token grid, labels of --classes classes with a share of IGNORE_INDEX, FiT3D's "stretch" resize.

    python experiments/bench_fused_loss.py --out $OUT/bench_fused_loss.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.probe import fused_loss
from fit3d_jax.probe.heads import Placement
from fit3d_jax.probe.metrics import IGNORE_INDEX
from timing import median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 512))
    parser.add_argument("--classes", type=str, default="20,150", help="comma-separated class counts")
    parser.add_argument("--resize", default="stretch", choices=("stretch", "crop"))
    args = parser.parse_args()
    placement = Placement.for_size(*args.crop, 14)
    grid = (placement.padded_height // 14, placement.padded_width // 14)
    rng = np.random.default_rng(0)
    results = []
    for classes in map(int, args.classes.split(",")):
        logits = jnp.asarray(rng.normal(size=(args.batch, *grid, classes)).astype(np.float32))
        labels = rng.integers(0, classes, (args.batch, *args.crop)).astype(np.int32)
        labels[rng.random(labels.shape) < 0.1] = IGNORE_INDEX
        labels = jnp.asarray(labels)
        row = {"classes": classes}
        outputs = {}
        for name, loss in (("fused", fused_loss.resized_cross_entropy), ("xla", fused_loss.reference_cross_entropy)):
            fn = jax.jit(jax.value_and_grad(lambda x, y, loss=loss: loss(x, y, placement, args.resize)))
            outputs[name] = jax.device_get(fn(logits, labels))
            row[f"{name}_ms"] = median_ms(lambda fn=fn, x=logits, y=labels: fn(x, y), jax.block_until_ready, warmup=3, runs=20)
        rows = jnp.zeros((args.batch, args.crop[0], grid[1], classes), jnp.float32)
        kernel = jax.jit(lambda r, y: fused_loss._kernel(r, y, fused_loss.width_taps(placement.width, grid[1], 0, placement.width)))
        row["kernel_alone_ms"] = median_ms(lambda f=kernel, x=rows, y=labels: f(x, y), jax.block_until_ready, warmup=3, runs=20)
        (a, ga), (b, gb) = outputs["fused"], outputs["xla"]
        row["loss_relative_difference"] = float(abs(a - b) / abs(b))
        row["grad_relative_difference"] = float(np.abs(ga - gb).max() / np.abs(gb).max())
        print(json.dumps(row), flush=True)
        results.append(row)
    report = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command=" ".join([Path(sys.executable).name, *sys.argv]), device=str(jax.devices()[0].device_kind),
                  jax=jax.__version__, batch=args.batch, crop=args.crop, grid=grid, resize=args.resize, results=results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
