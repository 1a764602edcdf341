"""Probe training speed on one device: steps/s of the protocol's live pipeline (augmentation, the
frozen backbones in the step) for each cell of --cells, with the loop's time split (waiting for
host batches, checkpoints) and, in the same run, the bound the ViT forward sets: forward images/s
at the crop's padded size / (batch x frozen models per step). A cell is
task:dtype:assemblies[:pipeline[:loss]]; several comma-separated assemblies are one multi-head run
(one backbone pass per model and step for all heads); pipeline ``resident`` (default: device_augment
on the accelerator, the training set kept on the device, steps send draws), ``device``
(device_augment, images sent with each batch) or ``host`` (the numpy/OpenCV reference on the host,
the loop before both); loss ``fused`` (default: the segmentation loss's FFI kernel) or ``xla``.
Random-weight DINOv2 of --arch, random rooms-like images (876x584, blocky labels of --classes
classes, smooth depth) held in memory; FiT3D's segmentation and depth settings (crop 512x512 /
480x640 (NYU), batch 16).

Per cell, also: the breakdown (``--breakdown``, default on): the host's time to prepare one batch,
alone, and the loop's rate when one batch is repeated (no host preparation); with ``--trace``, the
device's busy time per step over the timed steps of a third run, traced. And the evaluation (sliding
windows for segmentation, whole-image with flip for depth) of the --eval-images test images: the
time of a first pass (compiling) and the time per image of a second.

    python experiments/bench_probe.py --out $OUT/bench_probe.json
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from fit3d_jax.harness.loop import TrainLoop
from fit3d_jax.models.dinov2 import DinoV2, init_params, vit_config
from fit3d_jax.probe import augment
from fit3d_jax.probe.assembly import Backbones, models_for
from fit3d_jax.probe.datasets.types import Dataset, Example, Split
from fit3d_jax.probe.heads import Placement
from fit3d_jax.probe.train import Batches, Evaluation, Head, ProbeSettings, Schedule, evaluate_heads, train_heads
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
    parser.add_argument("--classes", type=int, default=150,
                        help="segmentation classes (ADE20K: 150; the cost of the head and of cat_max_ratio grows with it)")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the host's batch preparation alone and the loop without it (one batch repeated)")
    parser.add_argument("--trace", action="store_true", help="also trace the timed steps of a third run (JAX profiler) for the device's busy time")
    return parser.parse_args()


def dataset(task: str, count: int, test: int, classes: int = 150, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    h, w = 584, 876
    images = rng.integers(0, 256, (count + test, -(-h // 8), -(-w // 8), 3), np.uint8).repeat(8, 1).repeat(8, 2)[:, :h, :w]
    if task == "segmentation":
        targets = rng.integers(0, classes, (count + test, -(-h // 73), -(-w // 73))).repeat(73, 1).repeat(73, 2)[:, :h, :w].astype(np.int32)
    else:
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        targets = np.stack([(1 + 4 * (0.5 + 0.5 * np.sin(6 * xx + k) * np.cos(4 * yy))).astype(np.float32) for k in range(count + test)])
    split = lambda name, first, n: Split(name, n, lambda i: Example(f"{name}{i}", images[first + i], targets[first + i]))
    names = tuple(f"class{k}" for k in range(classes)) if task == "segmentation" else None
    return Dataset("bench", task, split("train", 0, count), split("test", count, test), names, max_depth=10.0)


def settings_for(task: str, steps: int, batch: int, pipeline: str, loss: str = "fused") -> ProbeSettings:
    on_device, resident_gb = pipeline != "host", 4.0 if pipeline == "resident" else 0.0
    if task == "segmentation":
        return ProbeSettings(schedule=Schedule(iterations=2 * steps, warmup_iterations=steps, batch_size=batch),
                             augment=augment.Augment(crop=(512, 512), scale=(2048, 512), on_device=on_device),
                             evaluation=Evaluation(mode="slide", crop=(512, 512), stride=(341, 341), num_visualize=0),
                             device_dataset_gb=resident_gb, fused_loss=loss == "fused")
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
    task, dtype, assemblies, *rest = cell.split(":")
    pipeline, loss = (rest + ["resident", "fused"][len(rest):])[:2]
    names = assemblies.split(",")
    model = DinoV2(vit_config(args.arch), dtype=jnp.dtype(dtype))
    data = dataset(task, args.images, args.eval_images, args.classes)
    if pipeline not in ("resident", "device", "host") or loss not in ("fused", "xla"):
        raise SystemExit(f"cell {cell}: pipeline {pipeline!r} is not 'resident', 'device' or 'host', or loss {loss!r} not 'fused' or 'xla'")
    settings = settings_for(task, args.steps, args.batch, pipeline, loss)
    heads = [(Head(a, a, settings.schedule.learning_rate, 0), Backbones(model, a, task)) for a in names]

    def loop(out: Path, window: tuple[int, int] | None = None) -> tuple[dict, float]:
        """The training loop over 2 x steps: (its summary, steps/s over the second half). With
        ``window``, the device's busy time over those steps, from a profiler trace."""
        done = TrainLoop.step_done
        def step_done(self, step, record, *rest, **kwargs):
            if window and step == window[0]:
                options = jax.profiler.ProfileOptions()
                options.python_tracer_level = 0  # Python tracing would slow the host side it measures
                jax.profiler.start_trace(out / "trace", create_perfetto_trace=True, profiler_options=options)
            result = done(self, step, record, *rest, **kwargs)
            if window and step == window[1]:
                jax.block_until_ready(record)
                jax.profiler.stop_trace()
            return result

        with mock.patch.object(TrainLoop, "step_done", step_done):
            tasks, states, summary = train_heads(data, heads, params, settings, out, log_every=args.steps,
                                                 checkpoint_every=10 * args.steps, progress=False)
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        return dict(summary, tasks=tasks, states=states), log[-1]["steps_per_second"]  # over steps..2*steps

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        start = time.perf_counter()
        summary, steps_per_s = loop(out / "run")
        wall = time.perf_counter() - start
        evaluated = [(summary["tasks"][h.name], b, summary["states"][h.name], out / h.name) for h, b in heads]

        def timed_evaluation() -> float:
            start = time.perf_counter()
            evaluate_heads(evaluated, data, params, settings, progress=False)
            return time.perf_counter() - start

        first = timed_evaluation()  # compiles; the second finds every program traced and compiled
        eval_seconds = timed_evaluation() / args.eval_images
        breakdown = {}
        if args.breakdown:
            batches = Batches(data, settings, seed=0, statistics=model.config.input_statistics)
            batches.resident()
            batches(0)
            start = time.perf_counter()
            for step in range(1, 21):
                batches(step)
            breakdown["host_ms_per_batch"] = (time.perf_counter() - start) / 20 * 1e3
            batches.close()
            fixed = {}
            def same_batch(self, step):  # step 0's batch at every step: the loop without host preparation
                if not fixed:
                    fixed["batch"] = prepare_batch(self, step)
                return fixed["batch"]

            prepare_batch = Batches.__call__
            with mock.patch.object(Batches, "__call__", same_batch):
                breakdown["same_batch_steps_per_second"] = loop(out / "same_batch")[1]
        if args.trace:
            window = (args.steps, 2 * args.steps)  # the timed half
            breakdown["traced_steps_per_second"] = loop(out / "traced", window)[1]
            breakdown["device_ms_per_step"] = device_busy(out / "traced" / "trace", window[1] - window[0])
    models = len(models_for(names))
    bound_images = forward_bound(model, params["original"], settings.augment.crop, args.batch)
    return dict(cell=cell, task=task, dtype=dtype, heads=names, pipeline=pipeline, loss=loss, frozen_models=models, batch=args.batch,
                crop=settings.augment.crop,
                steps_per_second=steps_per_s, bound_steps_per_second=bound_images / (args.batch * models),
                fraction_of_bound=steps_per_s * args.batch * models / bound_images, forward_images_per_second=bound_images,
                time_split_seconds=summary["time_split_seconds"], wall_seconds=wall, breakdown=breakdown,
                eval_images=args.eval_images, eval_seconds_per_image=eval_seconds, eval_first_seconds=first,
                eval_mode=settings.evaluation.mode)


def device_busy(trace: Path, steps: int) -> dict:
    """The device's busy time per step over a traced window, by line (each GPU stream is one: the
    kernels and copies it ran) and by jitted program (the kernels' ``hlo_module``). Where the
    compute line's time falls short of the step's wall time, the device waited for the host."""
    events = json.load(gzip.open(next(trace.rglob("perfetto_trace.json.gz"))))["traceEvents"]
    meta = [e for e in events if e.get("ph") == "M"]
    devices = {e["pid"] for e in meta if e["name"] == "process_name" and "/device:" in e["args"]["name"]}
    lines = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e["name"] == "thread_name" and e["pid"] in devices}
    busy: dict[str, dict[str, float]] = {"lines": {}, "programs": {}}
    for e in events:
        if e.get("ph") == "X" and e.get("pid") in devices:
            ms = e.get("dur", 0) / 1e3 / steps
            for kind, key in (("lines", lines.get((e["pid"], e["tid"]), str(e["tid"]))), ("programs", e.get("args", {}).get("hlo_module"))):
                if key is not None:
                    busy[kind][key] = busy[kind].get(key, 0.0) + ms
    return busy


def main() -> None:
    args = parse_args()
    config = vit_config(args.arch)
    params = {"original": init_params(config, seed=0), "finetuned": init_params(config, seed=1)}
    results = []
    for cell in args.cells.split(";"):
        r = run_cell(cell, args, params)
        results.append(r)
        split = ", ".join(f"{k} {v:.1f} s" for k, v in r["time_split_seconds"].items())
        extra = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {json.dumps(v)}" for k, v in r["breakdown"].items())
        print(f"{cell:55} {r['steps_per_second']:6.1f} steps/s (bound {r['bound_steps_per_second']:6.1f}, "
              f"{100 * r['fraction_of_bound']:4.0f} %); eval {1e3 * r['eval_seconds_per_image']:.1f} ms/image over "
              f"{r['eval_images']} (first pass, compiling: {r['eval_first_seconds']:.1f} s); {split}; {extra}", flush=True)
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
