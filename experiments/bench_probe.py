"""Probe training speed on one device: steps/s of the protocol's live pipeline (augmentation, the
frozen backbones in the step) for each cell of --cells, with the loop's time split (waiting for
host batches, checkpoints) and, in the same run, the bound the ViT forward sets: forward images/s
at the crop's padded size / (batch x frozen models per step). A cell is
task:dtype:assemblies[:pipeline]; several comma-separated assemblies are one multi-head run (one
backbone pass per model and step for all heads); pipeline ``resident`` (default: device_augment on
the accelerator, the training set kept on the device, steps send draws), ``device`` (device_augment,
images sent with each batch) or ``host`` (the numpy/OpenCV reference on the host, the loop before
both). Random-weight DINOv2 of --arch, random rooms-like images
(876x584, blocky labels, smooth depth) held in memory; FiT3D's segmentation and depth settings
(crop 512x512 / 480x640 (NYU), batch 16). Also times the evaluation (sliding windows for
segmentation, whole-image with flip for depth) per test image in steady state (a full evaluation
minus a 2-image one, after a first that compiles, so that tracing cancels), and that first one-image
evaluation (compiling).

    python experiments/bench_probe.py --out $OUT/bench_probe.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gzip
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.models.dinov2 import DinoV2, init_params, vit_config
from fit3d_jax.probe import augment
from fit3d_jax.probe.assembly import Backbones, models_for
from fit3d_jax.probe.datasets.types import Dataset, Example, Split
from fit3d_jax.probe.heads import Placement
from fit3d_jax.probe.train import Evaluation, Head, ProbeSettings, Schedule, evaluate_heads, train_heads
from timing import median_ms

CELLS = ";".join([
    "segmentation:bfloat16:concat:host", "segmentation:bfloat16:concat:device", "segmentation:bfloat16:concat", "segmentation:bfloat16:original",
    "segmentation:float32:original", "segmentation:float32:concat", "segmentation:bfloat16:original,finetuned,concat,add,fusion,duplicate",
    "depth:bfloat16:concat:host", "depth:bfloat16:concat:device", "depth:bfloat16:concat", "depth:bfloat16:original", "depth:float32:original",
    "depth:float32:concat"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--arch", default="vits14")
    parser.add_argument("--cells", default=CELLS, help="task:dtype:assemblies cells, separated by ';' (default: the issue's)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per cell, after as many untimed ones")
    parser.add_argument("--images", type=int, default=48, help="training images in memory")
    parser.add_argument("--eval-images", type=int, default=8, help="test images timed per evaluation")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--trace", type=Path, help="trace each cell's training (JAX profiler, Perfetto) under this folder and "
                                                   "report the device time per step of each jitted program")
    return parser.parse_args()


def dataset(task: str, count: int, test: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    h, w = 584, 876
    images = rng.integers(0, 256, (count + test, -(-h // 8), -(-w // 8), 3), np.uint8).repeat(8, 1).repeat(8, 2)[:, :h, :w]
    if task == "segmentation":
        targets = rng.integers(0, 20, (count + test, -(-h // 73), -(-w // 73))).repeat(73, 1).repeat(73, 2)[:, :h, :w].astype(np.int32)
    else:
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        targets = np.stack([(1 + 4 * (0.5 + 0.5 * np.sin(6 * xx + k) * np.cos(4 * yy))).astype(np.float32) for k in range(count + test)])
    split = lambda name, first, n: Split(name, n, lambda i: Example(f"{name}{i}", images[first + i], targets[first + i]))
    classes = tuple(f"class{k}" for k in range(20)) if task == "segmentation" else None
    return Dataset("bench", task, split("train", 0, count), split("test", count, test), classes, max_depth=10.0)


def settings_for(task: str, steps: int, batch: int, pipeline: str) -> ProbeSettings:
    on_device, resident_gb = pipeline != "host", 4.0 if pipeline == "resident" else 0.0
    if task == "segmentation":
        return ProbeSettings(schedule=Schedule(iterations=2 * steps, warmup_iterations=steps, batch_size=batch),
                             augment=augment.Augment(crop=(512, 512), scale=(2048, 512), on_device=on_device),
                             evaluation=Evaluation(mode="slide", crop=(512, 512), stride=(341, 341), num_visualize=0),
                             device_dataset_gb=resident_gb)
    return ProbeSettings(schedule=Schedule(learning_rate=1e-4, weight_decay=0.01, iterations=2 * steps, warmup_iterations=steps,
                                           policy="cosine", min_lr_ratio=1e-8, momentum="onecycle", clip_norm=35.0, batch_size=batch),
                         augment=augment.Augment(crop=(480, 640), scale=(0, 0), on_device=on_device),
                         evaluation=Evaluation(mode="whole", flip=True, num_visualize=0), device_dataset_gb=resident_gb)


def forward_bound(model: DinoV2, params, crop: tuple[int, int], batch: int) -> float:
    """Forward images/s at the crop's padded size."""
    placement = Placement.for_size(*crop, model.config.patch_size)
    x = jnp.zeros((batch, placement.padded_height, placement.padded_width, 3), jnp.float32)
    fn = jax.jit(lambda p, x: model.apply({"params": p}, x).patch_tokens)
    return batch / (median_ms(lambda: fn(params, x), jax.block_until_ready, warmup=3, runs=10) / 1e3)


def run_cell(cell: str, args, params: dict) -> dict:
    task, dtype, assemblies, pipeline = (cell + ":resident").split(":")[:4]
    names = assemblies.split(",")
    model = DinoV2(vit_config(args.arch), dtype=jnp.dtype(dtype))
    data = dataset(task, args.images, args.eval_images)
    if pipeline not in ("resident", "device", "host"):
        raise SystemExit(f"cell {cell}: pipeline {pipeline!r} is not 'resident', 'device' or 'host'")
    settings = settings_for(task, args.steps, args.batch, pipeline)
    heads = [(Head(a, a, settings.schedule.learning_rate, 0), Backbones(model, a, task)) for a in names]
    with tempfile.TemporaryDirectory() as out:
        trace = args.trace / cell.replace(":", "_").replace(",", "+") if args.trace else None
        start = time.perf_counter()
        with jax.profiler.trace(trace, create_perfetto_trace=True) if trace else contextlib.nullcontext():
            tasks, states, summary = train_heads(data, heads, params, settings, Path(out), log_every=args.steps,
                                                 checkpoint_every=10 * args.steps, progress=False)
        wall = time.perf_counter() - start
        log = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
        evaluated = [(tasks[h.name], b, states[h.name], Path(out) / h.name) for h, b in heads]

        def timed_evaluation(images: int) -> float:
            start = time.perf_counter()
            evaluate_heads(evaluated, data, params, dataclasses.replace(settings, evaluation=dataclasses.replace(
                settings.evaluation, max_images=images)), progress=False)
            return time.perf_counter() - start

        # Each evaluation traces its predictor afresh (one image size here); the first also
        # compiles, the others find the programs in the compilation cache. The steady time per
        # image is the difference of a full and a 2-image evaluation, where those costs cancel.
        first = timed_evaluation(1)
        few = timed_evaluation(2)
        eval_seconds = (timed_evaluation(args.eval_images) - few) / (args.eval_images - 2)
    device_ms = device_time_per_step(trace, 2 * args.steps) if trace else None
    models = len(models_for(names))
    bound_images = forward_bound(model, params["original"], settings.augment.crop, args.batch)
    steps_per_s = log[-1]["steps_per_second"]  # over the second half: steps..2*steps
    return dict(cell=cell, task=task, dtype=dtype, heads=names, pipeline=pipeline, frozen_models=models, batch=args.batch, crop=settings.augment.crop,
                steps_per_second=steps_per_s, bound_steps_per_second=bound_images / (args.batch * models),
                fraction_of_bound=steps_per_s * args.batch * models / bound_images, forward_images_per_second=bound_images,
                time_split_seconds=summary["time_split_seconds"], wall_seconds=wall,
                eval_seconds_per_image=eval_seconds, eval_first_image_seconds=first, eval_mode=settings.evaluation.mode,
                device_ms_per_step=device_ms)


def device_time_per_step(trace: Path, steps: int) -> dict:
    """Device (GPU) kernel time of the traced run per training step, by jitted program (XLA module)
    and in all: where it falls short of the step's wall time, the device waited for the host."""
    path = max(trace.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    events = json.load(gzip.open(path))["traceEvents"]
    devices = {e["pid"] for e in events if e.get("ph") == "M" and e["name"] == "process_name" and "GPU" in e["args"]["name"]}
    by_module: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and e["pid"] in devices:
            module = e.get("args", {}).get("hlo_module") or e["name"]
            by_module[module] = by_module.get(module, 0.0) + e["dur"] / 1e3 / steps
    top = dict(sorted(by_module.items(), key=lambda kv: -kv[1])[:12])
    return {"total": sum(by_module.values()), "by_program": top, "trace": str(path)}


def main() -> None:
    args = parse_args()
    config = vit_config(args.arch)
    params = {"original": init_params(config, seed=0), "finetuned": init_params(config, seed=1)}
    results = []
    for cell in args.cells.split(";"):
        r = run_cell(cell, args, params)
        results.append(r)
        split = ", ".join(f"{k} {v:.1f} s" for k, v in r["time_split_seconds"].items())
        print(f"{cell:55} {r['steps_per_second']:6.1f} steps/s (bound {r['bound_steps_per_second']:6.1f}, "
              f"{100 * r['fraction_of_bound']:4.0f} %); eval {1e3 * r['eval_seconds_per_image']:.1f} ms/image "
              f"(first image, compiling: {r['eval_first_image_seconds']:.1f} s); {split}", flush=True)
        if r["device_ms_per_step"]:
            print(f"    device {r['device_ms_per_step']['total']:.1f} ms/step: " + ", ".join(
                f"{k} {v:.2f}" for k, v in r["device_ms_per_step"]["by_program"].items()), flush=True)
        write(args, results)  # after every cell: a run cut short keeps what it measured


def write(args, results: list[dict]) -> None:
    report = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command=" ".join([Path(sys.executable).name, *sys.argv]), device=str(jax.devices()[0].device_kind),
                  versions=dict(python=platform.python_version(), jax=jax.__version__), args={k: str(v) for k, v in vars(args).items()},
                  results=results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
