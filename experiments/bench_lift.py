"""Stage I benchmark: a large built-in room lifted for K backbones at once (issue #32: one row per
K, e.g. 1, 2 and 6 of FiT3D's backbones), with the wall split, a per-iteration breakdown on the
final state, and memory.

Each row runs in its own process (memory peaks are the row's own): ``fit_scene`` on a 300 + 30-view
room at 876x584 (issue #4's benchmark; ``--densify-grad-threshold 5e-5`` ends near 1.2M
Gaussians), then on the final state, restored from its last checkpoint:

- rasterization forward + backward of the colour and the K x 64 feature channels, and the
  forward alone;
- the K decoders and feature losses, forward + backward, as this tree trains them (bfloat16
  operands, float32 accumulation, the loss's cotangent fed to the decoder's backward) and as the
  tree before issue #32 did (float32 autodiff, targets resized by ``jax.image.resize``), on the
  same inputs;
- the full step; the rest (photometric L1 + SSIM, Adam, statistics) is the difference;
- with ``--trace DIR``, the GPU time per kernel class of five full steps.

Row K = 1 lifts one unnamed backbone (the default layout); K > 1 the first K of FiT3D's six
(gen_commands order), named. Weights are random unless ``--weights name=source,...`` gives files
(random ones are saved once under ``--work``/weights). ``--extend`` skips the lift: the final state
of the single-backbone row (run before, same ``--work``) gets K - 1 more random feature slices and
decoders, so the per-iteration figures of K backbones at the same Gaussians cost seconds, not a
lift.

    python experiments/bench_lift.py --out results/bench_lift.json --backbones 1,2,6 --densify-grad-threshold 5e-5
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp

from fit3d_jax.harness.checkpoints import Checkpoints
from fit3d_jax.lift import targets as target_cache
from fit3d_jax.lift import trainer
from fit3d_jax.lift.backbones import Backbone, as_backbones
from fit3d_jax.lift.fit import fit_scene, identity, initial_capacity, restore, scene_arrays
from fit3d_jax.lift.gaussians import activated, init_from_points
from fit3d_jax.lift.losses import decoded_l1, l1
from fit3d_jax.lift.strategy import DefaultStrategy
from fit3d_jax.models.dinov2 import FIT3D_MODEL_NAMES, init_params, timm_config
from fit3d_jax.render import rasterize
from fit3d_jax.render.decode import decode
from fit3d_jax.scenes import load_scene, verify_pixels
from fit3d_jax.scenes.synthetic import ensure_room
from fit3d_jax.weights import load_weights, save_params
from timing import median_ms, trace_jax

FIT3D_BACKBONES = ("dinov2_small", "dinov2_base", "dinov2_reg_small", "clip_base", "mae_base", "deit3_base")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("outputs/bench_lift"))
    parser.add_argument("--backbones", default="1", help="comma-separated K, one row each (e.g. 1,2,6)")
    parser.add_argument("--views", type=int, default=300)
    parser.add_argument("--test-views", type=int, default=30)
    parser.add_argument("--width", type=int, default=876)
    parser.add_argument("--height", type=int, default=584)
    parser.add_argument("--iterations", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="", help="name=source,... for some of FiT3D's names (others random)")
    parser.add_argument("--decoder-dtype", default="bfloat16")
    parser.add_argument("--target-dtype", default="bfloat16")
    parser.add_argument("--densify-grad-threshold", type=float, default=None,
                        help="the 3DGS densification threshold (recipe: 2e-4); 5e-5 ends near 1.2M Gaussians on the 300-view room")
    parser.add_argument("--extend", action="store_true", help="no lift: time K backbones on the K = 1 row's final state")
    parser.add_argument("--trace", type=Path, default=None, help="profile five full steps per row: GPU time per kernel class")
    parser.add_argument("--row", type=int, default=None, help=argparse.SUPPRESS)  # a child process: this K only
    return parser.parse_args(argv)


def weights_for(names: list[str], args) -> dict:
    """Loaded weights per FiT3D name: the given sources, else random ones saved under the work folder."""
    given = dict(entry.split("=", 1) for entry in args.weights.split(",") if entry)
    loaded = {}
    for i, name in enumerate(names):
        source = given.get(name)
        if source is None:
            source = args.work / "weights" / name
            if not source.exists():
                config = timm_config(FIT3D_MODEL_NAMES[name])
                save_params(source, init_params(config, seed=i), config)
        loaded[name] = load_weights(str(source), announce=False)
    return loaded


def kernel_class(name: str) -> str:
    lowered = name.lower()
    for cls, keys in (("rasterizer: projection", ("project_",)), ("rasterizer: binning", ("count_kernel", "emit_kernel", "tile_offsets",
                      "radix", "scan", "view_counts")), ("rasterizer: blend forward", ("forward_kernel",)),
                      ("rasterizer: blend backward", ("backward_kernel",)),
                      ("matmul / convolution", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "conv", "cudnn", "dot"))):
        if any(k in lowered for k in keys):
            return cls
    return "other (losses, Adam, resizes, copies)"


def step_breakdown(state, data: trainer.SceneArrays, recipe: trainer.Recipe, strategy, extent: float, backbones, trace) -> dict:
    """Per-iteration costs on ``state`` (view 0). Arrays are arguments, not constants of the programs."""
    params = activated(state.gaussians, state.active)
    dtype = trainer.DTYPES[recipe.decoder_dtype]
    render = lambda p, data: rasterize(*p, data.camera(0), jnp.zeros(3))

    @jax.jit
    def raster_step(p, data):
        def loss(q):
            out = render(q, data)
            image = data.images[0].astype(jnp.float32) / 255.0
            return jnp.abs(out.rgb - image).mean() + jnp.abs(out.features).mean(), out.n_isect

        return jax.grad(loss, has_aux=True)(p)

    raster_forward = jax.jit(lambda p, data: (lambda o: (o.rgb, o.features))(render(p, data)))
    feats = jax.random.normal(jax.random.key(0), (data.height, data.width, recipe.feature_dim * len(backbones)))
    kernels = tuple(trainer.kernel(d) for d in state.decoders)

    def per_backbone(loss):
        def total(f, ks, data):
            return sum(loss(trainer.backbone_features(f, k, recipe.feature_dim), ks[k], k, data) for k in range(len(ks)))

        return jax.jit(jax.grad(total, argnums=(0, 1)))

    decoders_now = per_backbone(lambda f, kern, k, data: decoded_l1(f, kern, trainer.upsampled_target(data, k, 0), data.masks[0], dtype))

    def before(f, kern, k, data):  # the tree before issue #32: float32 autodiff, jax.image.resize targets
        tokens = data.targets[k][0].astype(jnp.float32)
        target = jax.image.resize(tokens, (data.height, data.width, tokens.shape[-1]), "bilinear", antialias=False)
        return l1(decode(f, kern), target, data.masks[0])

    decoders_before = per_backbone(before)
    step = trainer.make_train_step(recipe, strategy, extent, backbones)
    copy = lambda: jax.tree.map(jnp.copy, state)  # the step donates its state
    full = median_ms(lambda: step(copy(), data, 0)[1], jax.block_until_ready)
    state_copy = median_ms(copy, jax.block_until_ready)
    raster = median_ms(lambda: raster_step(params, data), jax.block_until_ready)
    decoders = median_ms(lambda: decoders_now(feats, kernels, data), jax.block_until_ready)
    out = {
        "rasterize_fwd_bwd_ms": raster,
        "rasterize_fwd_ms": median_ms(lambda: raster_forward(params, data), jax.block_until_ready),
        "n_isect": int(raster_step(params, data)[1]),
        "decoders_and_feature_losses_fwd_bwd_ms": decoders,
        "decoders_and_feature_losses_fwd_bwd_ms_before": median_ms(lambda: decoders_before(feats, kernels, data), jax.block_until_ready),
        "full_step_minus_copy_ms": full - state_copy,
        "state_copy_ms": state_copy,
        "rest_ms": full - state_copy - raster - decoders,  # L1 + SSIM, Adam, statistics
        "capacity": int(state.capacity),
        "active": int(state.active.sum()),
    }
    if trace:
        out["trace"] = trace_jax(lambda: step(copy(), data, 0)[1], trace, kernel_class)
    return out


def extended(state, recipe: trainer.Recipe, strategy, extent: float, backbones, key):
    """A single-backbone state with random feature slices and fresh decoders for ``backbones``."""
    g = state.gaussians
    extra = jax.random.normal(key, (g.capacity, recipe.feature_dim * (len(backbones) - 1))) * 0.1
    g = g.replace(features=jnp.concatenate([g.features, extra], axis=1))
    fresh = trainer.init_state(g, state.active, recipe, strategy, extent, tuple(b.dim for b in backbones), key)
    return fresh.replace(stats=state.stats, iteration=state.iteration)


def row(k: int, args) -> dict:
    names = list(FIT3D_BACKBONES[:k])
    t0 = time.time()
    room = ensure_room(args.work / f"room_{args.seed}_{args.views}", seed=args.seed, width=args.width, height=args.height,
                       num_train=args.views, num_test=args.test_views)
    generate_seconds = time.time() - t0
    scene = load_scene(room)
    loaded = weights_for(names, args)
    models = loaded[names[0]] if k == 1 else [Backbone(n, loaded[n]) for n in names]
    backbones = as_backbones(models)
    overrides = {} if args.densify_grad_threshold is None else {"densify_grad_threshold": args.densify_grad_threshold}
    recipe = trainer.Recipe(iterations=args.iterations, decoder_dtype=args.decoder_dtype, target_dtype=args.target_dtype)
    strategy = DefaultStrategy(**overrides)
    fingerprint = verify_pixels(scene)
    extent = trainer.scene_extent([v.camera_center for v in scene.train])
    key = jax.random.key(0)
    source = args.work / ("out_1" if args.extend else f"out_{k}")
    metrics = None
    if not args.extend:
        metrics = fit_scene(scene, models, recipe, source, checkpoint_every=10_000, log_every=1000, progress=False, strategy=strategy,
                            fingerprint=fingerprint)

    # The final state, restored from the last checkpoint (of this row, or of the K = 1 row).
    lifted = as_backbones(loaded[names[0]]) if args.extend else backbones
    g, active = init_from_points(scene.points, scene.point_colors, recipe.feature_dim * len(lifted), initial_capacity(len(scene.points)))
    fresh = trainer.init_state(g, active, recipe, strategy, extent, tuple(b.dim for b in lifted), key)
    checkpoints = Checkpoints(source / scene.name / "checkpoints", identity(scene, fingerprint, recipe, strategy, lifted, args.seed))
    state = restore(checkpoints, fresh)
    checkpoints.close()
    if args.extend:
        state = extended(state, recipe, strategy, extent, backbones, key)
    views = list(scene.train) + list(scene.test)
    dtype = trainer.DTYPES[recipe.target_dtype]
    t0 = time.time()
    all_targets = [target_cache.cached_targets(source / scene.name / "cache", views, b.weights, fingerprint, dtype) for b in backbones]
    targets_seconds = time.time() - t0  # cached for a lifted row; computed for an extended one
    data = scene_arrays(list(scene.train), tuple(t[: len(scene.train)] for t in all_targets))
    trace = args.trace / f"k{k}" if args.trace else None
    breakdown = step_breakdown(state, data, recipe, strategy, extent, backbones, trace)
    if metrics is not None:  # the loop's own mean: fitting less density control (includes compiles and checkpoints)
        breakdown["loop_mean_step_ms"] = (metrics["train_seconds"] - metrics["density_control_seconds"]) * 1e3 / args.iterations
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "backbones": [f"{b.name or names[0]}: {b.weights.config.name} D={b.dim} patch {b.weights.config.patch_size}" for b in backbones],
        "generate_seconds": generate_seconds,
        "lift": metrics,
        "extended_from_k1": args.extend,
        "targets_seconds_extended": targets_seconds if args.extend else None,
        "target_bytes_on_device": int(sum(t[: len(scene.train)].nbytes for t in all_targets)),
        "per_iteration": breakdown,
        "peak_device_gb_process": stats.get("peak_bytes_in_use", float("nan")) / 1e9,
        "recipe": dataclasses.asdict(recipe),
        "strategy": dataclasses.asdict(strategy),
    }


def main() -> None:
    args = parse_args()
    if args.row is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(row(args.row, args), indent=1))
        return
    rows = []
    for k in (int(x) for x in args.backbones.split(",")):
        part = args.out.with_name(f"{args.out.stem}_k{k}.json")
        cmd = [sys.executable, __file__, *sys.argv[1:], "--row", str(k)]
        cmd[cmd.index("--out") + 1] = str(part)
        subprocess.run(cmd, check=True)
        rows.append({"k": k} | json.loads(part.read_text()))
        r = rows[-1]
        lift = r["lift"] or {}
        print(json.dumps({"k": k, "wall_seconds": lift.get("wall_seconds"), "gaussians": lift.get("gaussians"),
                          "per_iteration": {n: v for n, v in r["per_iteration"].items() if n != "trace"},
                          "peak_device_gb": lift.get("peak_device_gb", r["peak_device_gb_process"])}, indent=1), flush=True)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "room": {"views": args.views, "test_views": args.test_views, "size": [args.width, args.height]},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
