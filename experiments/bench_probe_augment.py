"""The device augmentation alone (issue #18): ms per batch of 16 of bench_probe.py's segmentation
and depth cells, the training set resident on the device, with each costly step switched off in
turn (the cat_max_ratio check, the photometric distortion), so the breakdown shows what each costs.

    python experiments/bench_probe_augment.py --out $OUT/bench_probe_augment.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import sys
from pathlib import Path

import bench_probe
import jax

from fit3d_jax.probe import device_augment
from fit3d_jax.probe.datasets import SEGMENTATION
from fit3d_jax.probe.train import Batches
from timing import median_ms

VARIANTS = {"segmentation": {"protocol": {}, "no cat_max_ratio": {"cat_max_ratio": 1.0}, "no photometric": {"photometric": False},
                             "neither": {"cat_max_ratio": 1.0, "photometric": False}},
            "depth": {"protocol": {}, "no rotation": {"rotate_prob": 0.0}}}


def augment(inputs: dict, resident: dict, task: str, a, classes: int):
    """The step's augmentation program: the batch's images gathered by index, then augmented."""
    inputs = dict(inputs)
    index = inputs.pop("index")
    inputs |= {k: v[index] for k, v in resident.items()}
    if task == SEGMENTATION:
        return device_augment.segmentation_batch(inputs, a, classes)
    return device_augment.depth_batch(inputs, a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--classes", type=int, default=150)
    args = parser.parse_args()
    results = []
    for task, variants in VARIANTS.items():
        data = bench_probe.dataset(task, 48, 1, args.classes)
        for name, change in variants.items():
            settings = bench_probe.settings_for(task, 1, 16, "resident")
            settings = dataclasses.replace(settings, augment=dataclasses.replace(settings.augment, **change))
            batches = Batches(data, settings, seed=0)
            resident = jax.device_put(batches.resident())
            inputs = jax.device_put(batches(3)[0])
            batches.close()
            fn = jax.jit(functools.partial(augment, task=task, a=settings.augment, classes=args.classes))
            ms = median_ms(functools.partial(fn, inputs, resident), jax.block_until_ready, warmup=3, runs=20)
            results.append({"task": task, "variant": name, "change": change, "ms_per_batch": ms})
            print(f"{task:13} {name:18} {ms:7.2f} ms per batch of 16", flush=True)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "device": str(jax.devices()[0].device_kind),
              "classes": args.classes, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
