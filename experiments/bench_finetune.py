"""Stage II benchmark (issue #5): fine-tuning throughput in views per second, with a breakdown.

The store is synthetic but realistic in size: --scenes scenes of --gaussians Gaussians each (the
rasterizer benchmark's random scene, C = 64), random decoders to 384 channels, views at 876x584
(so the ViT sees 574x868, a 41x62 token grid) with photographs written as PNGs. Reported:
views/s of the fine-tuning loop (global batch --batch over all devices, bfloat16), and, measured
separately, target rendering per view, the model step, and host preparation per batch.

    python experiments/bench_finetune.py --out results/bench_finetune.json [--steps 200 --gaussians 1000000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import cv2
import jax
import numpy as np

from fit3d_jax.finetune import data, targets, train
from fit3d_jax.finetune.store import StoredScene, StoredView
from fit3d_jax.images import demo_images
from fit3d_jax.models.dinov2 import vit_config
from fit3d_jax.render.random_scene import front_camera, random_scene
from fit3d_jax.weights import load_weights


def synthetic_store(work: Path, scenes: int, gaussians: int, views: int, width: int, height: int, dim: int) -> list[StoredScene]:
    work.mkdir(parents=True, exist_ok=True)
    photos = []
    for source in demo_images():  # real photographs shipped with scikit-image
        path = work / f"{source.stem}_{width}x{height}.png"
        if not path.exists():
            cv2.imwrite(str(path), cv2.resize(cv2.imread(str(source)), (width, height), interpolation=cv2.INTER_AREA))
        photos.append(path)
    camera = front_camera(width, height, focal=width / 2)
    rng = np.random.default_rng(0)
    out = []
    for s in range(scenes):
        g = random_scene(gaussians, camera, channels=64, seed=s, scale=0.01)
        view_list = []
        for v in range(views):
            rot, _ = np.linalg.qr(np.eye(3) + 0.05 * rng.normal(size=(3, 3)))
            viewmat = np.eye(4)
            viewmat[:3, :3] = rot * np.sign(np.diag(rot))  # small random rotation about the origin
            view_list.append(StoredView(photos[v % len(photos)], None, width, height, (width / 2, width / 2, width / 2, height / 2), viewmat))
        decoder = rng.normal(0, 1 / np.sqrt(9 * 64), (3, 3, 64, dim)).astype(np.float32)
        out.append(StoredScene(f"scene_{s}", g.means, g.scales, g.quats, g.opacities, g.features, decoder, tuple(view_list)))
    return out


def median_ms(fn, runs: int = 20) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("outputs/bench_finetune"))
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=100, help="views per scene")
    parser.add_argument("--width", type=int, default=876)
    parser.add_argument("--height", type=int, default=584)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=0, help="global batch (default: 2 per device)")
    parser.add_argument("--weights", default="", help="any load_weights source; default random ViT-S/14")
    args = parser.parse_args()

    if args.weights:
        weights = load_weights(args.weights)
        params, config = weights.params, weights.config
    else:
        from fit3d_jax.models.dinov2 import init_params

        config = vit_config("vits14")
        params = init_params(config)
    scenes = synthetic_store(args.work / "store", args.scenes, args.gaussians, args.views, args.width, args.height, config.embed_dim)
    batch = args.batch or 2 * jax.device_count()
    recipe = train.Recipe(batch_size=batch, epochs=1e9)

    # Warm-up run (compilation, scene transfers), then the timed run from a fresh output dir.
    warmup = args.work / "warmup"
    shutil.rmtree(warmup, ignore_errors=True)  # never resume the warm-up
    train.finetune(scenes, params, config, recipe, warmup, max_steps=5, progress=False, log_every=1000)
    t0 = time.time()
    _, summary = train.finetune(scenes, params, config, recipe, args.work / f"run_{time.time_ns()}", max_steps=args.steps, progress=False, log_every=args.steps)
    loop_seconds = time.time() - t0

    # Breakdown, each part alone on device 0.
    full, model_size, grid = data.image_size(scenes, config.patch_size)
    cache = targets.SceneCache(scenes, jax.devices()[0], 64e9)
    view = scenes[0].views[0]
    viewmat, intrinsics = targets.view_camera(view)
    render_ms = median_ms(lambda: targets.render_target(cache.get(0), viewmat, intrinsics, False, view.width, view.height, grid))
    sampler = data.Sampler(scenes, batch, seed=0)
    t0 = time.perf_counter()
    for step in range(10):
        for s in sampler.batch(step):
            data.prepare(scenes, s, model_size, grid)
    host_ms_per_view = (time.perf_counter() - t0) * 1e3 / (10 * batch)

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "devices": [d.device_kind for d in jax.devices()],
        "jax": jax.__version__,
        "setup": {"scenes": args.scenes, "gaussians": args.gaussians, "views_per_scene": args.views, "image": [args.width, args.height],
                  "model_input": list(model_size), "token_grid": list(grid), "global_batch": batch, "dtype": "bfloat16"},
        "views_per_second": summary["views_per_second"],
        "loop_seconds": loop_seconds,
        "summary": summary,
        "breakdown": {"render_target_ms_per_view": render_ms, "host_prepare_ms_per_view_one_thread": host_ms_per_view},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("devices", "views_per_second", "breakdown")}, indent=1))


if __name__ == "__main__":
    main()
