"""Stage II benchmark (issue #5): fine-tuning throughput in views per second, with a breakdown.

The store is synthetic but realistic in size: --scenes scenes of --gaussians Gaussians each (the
rasterizer benchmark's random scene, C = 64), random decoders to 384 channels, views at 876x584
(so the ViT sees 574x868, a 41x62 token grid) with photographs written as PNGs. Reported:
views/s of the fine-tuning loop (global batch --batch over all devices, bfloat16), and, measured
separately, target rendering per view, the model step, and host preparation per batch.

Every ``finetune`` call jits its step afresh and writes a checkpoint at its end, so one call's
views/s includes tracing, compilation (from the persistent cache after the warm-up) and that
checkpoint. The steady-state figure is therefore the difference of two timed runs of
--short-steps and --steps steps: (extra views) / (extra seconds), in which those fixed costs
cancel; with --repeats, the median over that many pairs. Both runs' own end-to-end figures are
reported too.

    python experiments/bench_finetune.py --out results/bench_finetune.json [--steps 600 --short-steps 100 --gaussians 1000000]

--backend picks the rasterizer of the target renders (finetune's render_backend: 'jax' measures the
pure-JAX path that TPUs use; default 'auto', the kernels where built).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fit3d_jax.finetune import data, targets, train
from fit3d_jax.finetune.store import StoredScene, StoredView
from fit3d_jax.images import demo_images
from fit3d_jax.models.dinov2 import DinoV2, vit_config
from fit3d_jax.render.random_scene import front_camera, random_scene
from fit3d_jax.render.rasterize import BACKENDS
from fit3d_jax.weights import load_weights
from timing import median_ms


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


def model_step(config, params, recipe: train.Recipe, model_size, grid, reduce_dtype) -> Callable[[], dict]:
    """A call that runs stage II's model step once (ViT in bfloat16, the recipe's global batch
    sharded over all devices) on a fixed random batch and returns its metrics unsynchronised."""
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    model = DinoV2(config, dtype=jnp.bfloat16)
    step_fn = train.make_train_step(model, mesh, reduce_dtype=reduce_dtype)
    batched = NamedSharding(mesh, PartitionSpec("data"))
    rng = np.random.default_rng(0)
    b = recipe.batch_size
    images = jax.device_put(rng.integers(0, 256, size=(b, *model_size, 3), dtype=np.uint8), batched)
    target = jax.device_put(rng.normal(size=(b, *grid, config.embed_dim)).astype(np.float32), batched)
    weights = jax.device_put(np.ones((b, *grid), np.float32), batched)
    own = jax.tree.map(jnp.array, params)  # the step donates its state
    holder = [jax.device_put(train.initial_state(model, own, recipe), NamedSharding(mesh, PartitionSpec()))]

    def run():
        holder[0], metrics = step_fn(holder[0], images, target, weights)
        return metrics

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("outputs/bench_finetune"))
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--gaussians", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=100, help="views per scene")
    parser.add_argument("--width", type=int, default=876)
    parser.add_argument("--height", type=int, default=584)
    parser.add_argument("--steps", type=int, default=600, help="steps of the long timed run")
    parser.add_argument("--short-steps", type=int, default=100, help="steps of the short timed run")
    parser.add_argument("--batch", type=int, default=0, help="global batch (default: 2 per device)")
    parser.add_argument("--weights", default="", help="any load_weights source; default random weights of --arch")
    parser.add_argument("--arch", default="vits14", help="the random model's official arch (vits14, vitb14, ...)")
    parser.add_argument("--grad-reduce-dtype", default="bfloat16", choices=["bfloat16", "float32"], help="dtype of the cross-device gradient sum")
    parser.add_argument("--compile-cache", default="", help="JAX persistent compilation cache (default: <work>/xla_cache)")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of timed runs; views/s is their median")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the parts measured alone")
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help="rasterizer backend of the target renders")
    args = parser.parse_args()


    jax.config.update("jax_compilation_cache_dir", args.compile_cache or str((args.work / "xla_cache").absolute()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if args.weights:
        weights = load_weights(args.weights)
        params, config = weights.params, weights.config
    else:
        from fit3d_jax.models.dinov2 import init_params

        config = vit_config(args.arch)
        params = init_params(config)
    scenes = synthetic_store(args.work / "store", args.scenes, args.gaussians, args.views, args.width, args.height, config.embed_dim)
    batch = args.batch or 2 * jax.device_count()
    recipe = train.Recipe(batch_size=batch, epochs=1e9)
    reduce_dtype = jnp.dtype(args.grad_reduce_dtype)

    # Warm-up run (compilation, scene transfers), then the timed run from a fresh output dir.
    warmup = args.work / "warmup"
    shutil.rmtree(warmup, ignore_errors=True)  # never resume the warm-up
    train.finetune(scenes, params, config, recipe, warmup, reduce_dtype=reduce_dtype, max_steps=5, progress=False, log_every=1000,
                   render_backend=args.backend)
    pairs = []
    for _ in range(args.repeats):
        runs = {}
        for steps in (args.short_steps, args.steps):
            t0 = time.time()
            _, summary = train.finetune(scenes, params, config, recipe, args.work / f"run_{time.time_ns()}", reduce_dtype=reduce_dtype,
                                        max_steps=steps, progress=False, log_every=steps, render_backend=args.backend)
            runs[steps] = {"call_seconds": time.time() - t0, "summary": summary}
        extra_seconds = runs[args.steps]["summary"]["seconds"] - runs[args.short_steps]["summary"]["seconds"]
        pairs.append({"steady": (args.steps - args.short_steps) * batch / extra_seconds, "runs": runs})
    steady = float(np.median([p["steady"] for p in pairs]))
    # Breakdown, each part alone on device 0.
    _, model_size, grid = data.image_size(scenes, config.patch_size)
    breakdown = {}
    if not args.no_breakdown:
        cache = targets.SceneCache(scenes, jax.devices()[0], 64e9)
        view = scenes[0].views[0]
        viewmat, intrinsics = targets.view_camera(view)
        per_device = max(1, batch // jax.device_count())  # a device's rows, rendered as one batch
        render_ms = median_ms(lambda: targets.render_targets(
            (cache.get(0),) * per_device, np.stack([viewmat] * per_device), np.stack([intrinsics] * per_device),
            np.zeros(per_device, bool), view.width, view.height, grid, args.backend), jax.block_until_ready) / per_device
        sampler = data.Sampler(scenes, batch, seed=0)
        t0 = time.perf_counter()
        for step in range(10):
            for s in sampler.batch(step):
                data.prepare(scenes, s, model_size, grid)
        host_ms_per_view = (time.perf_counter() - t0) * 1e3 / (10 * batch)

        # The model step alone (forward, backward, AdamW) on a fixed batch, over all devices, with the
        # gradients summed in either dtype.
        model_step_ms = {
            name: median_ms(model_step(config, params, recipe, model_size, grid, jnp.dtype(name)), jax.block_until_ready)
            for name in ("bfloat16", "float32")
        }

        breakdown = {
            "render_target_ms_per_view": render_ms,
            "model_step_ms_per_batch": model_step_ms[args.grad_reduce_dtype],
            "model_step_ms_per_view": model_step_ms[args.grad_reduce_dtype] / batch,
            "model_step_ms_per_batch_by_reduce_dtype": model_step_ms,
            "host_prepare_ms_per_view_one_thread": host_ms_per_view,
            "note": "each part alone: render on device 0; the model step (global batch, all devices) on a fixed batch; host "
                    "preparation in one thread (the loop uses min(32, CPU count) threads)",
        }

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "devices": [d.device_kind for d in jax.devices()],
        "jax": jax.__version__,
        "setup": {"scenes": args.scenes, "gaussians": args.gaussians, "views_per_scene": args.views, "image": [args.width, args.height],
                  "model_input": list(model_size), "token_grid": list(grid), "global_batch": batch, "dtype": "bfloat16",
                  "grad_reduce_dtype": args.grad_reduce_dtype, "rasterizer_backend": args.backend},
        "views_per_second": steady,
        "views_per_second_note": f"steady state: ({args.steps} - {args.short_steps}) steps x {batch} views over the difference "
                                 "of the two runs' loop seconds",
        "views_per_second_end_to_end": [{str(k): v["summary"]["views_per_second"] for k, v in p["runs"].items()} for p in pairs],
        "views_per_second_repeats": [p["steady"] for p in pairs],
        "runs": [{str(k): v for k, v in p["runs"].items()} for p in pairs],
        "breakdown": breakdown,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("devices", "views_per_second", "views_per_second_repeats", "views_per_second_end_to_end",
                                             "breakdown")}, indent=1))


if __name__ == "__main__":
    main()
