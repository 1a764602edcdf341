"""The probe's host side alone (issue #18): ms to prepare one batch of 16 and the bytes it sends to
the device, with images sent per batch (pipeline ``device``) and with the training set resident
on the device (``resident``: indices and draws only), on bench_probe.py's segmentation data.

    python experiments/bench_probe_host.py --out experiments/results/bench_probe_host.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import bench_probe

from fit3d_jax.probe.train import Batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    data = bench_probe.dataset("segmentation", 48, 4)
    cells = []
    for pipeline in ("device", "resident"):
        batches = Batches(data, bench_probe.settings_for("segmentation", args.steps, 16, pipeline), seed=0)
        start = time.perf_counter()
        resident = batches.resident()
        built = time.perf_counter() - start
        batches(0)  # warm the worker threads
        start = time.perf_counter()
        for step in range(1, args.steps + 1):
            inputs, _ = batches(step)
        cells.append({"pipeline": pipeline, "ms_per_batch": (time.perf_counter() - start) / args.steps * 1e3,
                      "mb_per_batch": sum(v.nbytes for v in inputs.values()) / 1e6,
                      "resident_build_seconds": built if resident is not None else None})
        batches.close()
        print(json.dumps(cells[-1]), flush=True)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "cpus": os.cpu_count(),
              "python": platform.python_version(), "cells": cells}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
