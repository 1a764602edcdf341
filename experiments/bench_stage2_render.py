"""Stage II target rendering, batched against one call per view (issue #19): ms per view of
``targets.render_targets`` on k views in one program (a vmapped batch on the kernels, views one
after another on the pure-JAX backend) and of ``targets.render_target`` called once per view,
for each backend, on the rasterizer benchmark's scene (876x584, C = 64)
decoded to 384 channels and resized to the 41x62 token grid.

    python experiments/bench_stage2_render.py --out experiments/results/bench_stage2_render.json [--n 1000000 --views 1 2 4 8]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import numpy as np

from fit3d_jax.finetune import targets
from fit3d_jax.render.random_scene import front_camera, random_scene
from timing import median_ms

WIDTH, HEIGHT, GRID, DIM = 876, 584, (41, 62), 384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--backends", nargs="+", default=["ffi", "jax"])
    args = parser.parse_args()

    camera = front_camera(WIDTH, HEIGHT, focal=WIDTH / 2)
    g = random_scene(args.n, camera, channels=64, seed=0, scale=0.01)
    decoder = np.random.default_rng(0).normal(0, 1 / 24, (3, 3, 64, DIM)).astype(np.float32)
    scene = targets.DeviceScene(**jax.device_put(targets.pad_scene(targets.StoredScene(
        "bench", g.means, g.scales, g.quats, g.opacities, g.features, decoder, ())), jax.devices()[0]))
    rng = np.random.default_rng(1)
    viewmats = []
    for _ in range(max(args.views)):
        rot, _ = np.linalg.qr(np.eye(3) + 0.05 * rng.normal(size=(3, 3)))
        m = np.eye(4, dtype=np.float32)
        m[:3, :3] = rot * np.sign(np.diag(rot))
        viewmats.append(m)
    intrinsics = np.array([WIDTH / 2, WIDTH / 2, WIDTH / 2, HEIGHT / 2], np.float32)

    one = jax.jit(targets.render_target, static_argnums=(4, 5, 6, 7))
    cells = []
    for backend in args.backends:
        for k in args.views:
            cams, intr = np.stack(viewmats[:k]), np.stack([intrinsics] * k)
            loop = lambda k=k, b=backend: [one(scene, viewmats[i], intrinsics, False, WIDTH, HEIGHT, GRID, b) for i in range(k)]
            batch = lambda k=k, b=backend, cams=cams, intr=intr: targets.render_targets(
                (scene,) * k, cams, intr, np.zeros(k, bool), WIDTH, HEIGHT, GRID, b)
            looped = median_ms(loop, jax.block_until_ready, runs=10)
            batched = median_ms(batch, jax.block_until_ready, runs=10)
            cells.append({"backend": backend, "views": k, "loop_ms_per_view": looped / k, "batched_ms_per_view": batched / k})
            print(json.dumps(cells[-1]), flush=True)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "devices": [d.device_kind for d in jax.devices()],
        "jax": jax.__version__,
        "setup": {"gaussians": args.n, "padded_to": int(scene.means.shape[0]), "image": [WIDTH, HEIGHT], "decoded_channels": DIM,
                  "token_grid": list(GRID)},
        "cells": cells,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
