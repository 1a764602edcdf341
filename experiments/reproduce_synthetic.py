"""The paper's experiment (Tables 1, 2 and 13) on built-in synthetic rooms, end to end.

    python experiments/reproduce_synthetic.py --work outputs/reproduce_synthetic [--stages rooms,lift,finetune,probe]

1. rooms:    generate lifting rooms (seeds 0..L-1) and disjoint probing rooms (train: 100.., test: 200..).
2. lift:     stage I on the lifting rooms (configs/lift.py, `quick` budget on CPUs).
3. finetune: stage II on their store (configs/finetune.py).
4. probe:    linear probes (configs/probe_synthetic.py) for segmentation and depth with the
             original features, original + fine-tuned (concatenation), original duplicated and
             original with twice the learning rate, one run per probe seed; then a table of
             mean +- std over seeds (results.json, results.md).

Every stage runs the project's own jobs through `python -m fit3d_jax.main`, so the commands in
the log are the commands a user would type. Stages resume: a finished job is skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Rows of the tables: name -> probe overrides. "original, 2x lr" checks whether duplicating the
# features helps only by doubling the head's effective step size (two copies, same gradient).
ROWS = {
    "original": {"assembly": "original"},
    "concat": {"assembly": "concat"},
    "duplicate": {"assembly": "duplicate"},
    "original_2x_lr": {"assembly": "original", "schedule.learning_rate": 2e-3},
}
TASKS = {"segmentation": ("mIoU", "mAcc", "aAcc"), "depth": ("rmse", "abs_rel", "a1")}


def job(config: str, log, **overrides) -> None:
    command = [sys.executable, "-m", "fit3d_jax.main", f"--config={config}"]
    command += [f"--config.{k}={v}" for k, v in overrides.items()]
    line = shlex.join(command)
    print(f"$ {line}", flush=True)
    log.write(f"$ {line}\n")
    log.flush()
    start = time.time()
    subprocess.run(command, check=True)
    log.write(f"# {time.time() - start:.0f} s\n")
    log.flush()


def rooms(args, log) -> None:
    job("configs/generate_rooms.py", log, output_dir=args.work / "rooms" / "lift", num_rooms=args.lift_rooms, first_seed=0,
        width=args.lift_width, height=args.lift_height, num_train=20, num_test=4, num_workers=0)
    for split, first, count in (("probe_train", 100, args.probe_train_rooms), ("probe_test", 200, args.probe_test_rooms)):
        job("configs/generate_rooms.py", log, output_dir=args.work / "rooms" / split, num_rooms=count, first_seed=first,
            width=args.probe_width, height=args.probe_height, num_train=args.probe_views, num_test=1, num_workers=0)


def lift(args, log) -> None:
    job("configs/lift.py", log, scenes=args.work / "rooms" / "lift", output_dir=args.work / "lift", budget="quick",
        progress=False)


def finetune(args, log) -> None:
    job("configs/finetune.py", log, store=args.work / "lift" / "store", output_dir=args.work / "finetune",
        **{"recipe.epochs": args.finetune_epochs}, dtype="float32", progress=False)


def probe(args, log) -> dict:
    results = {}
    for task in TASKS:
        for row, overrides in ROWS.items():
            for seed in range(args.seeds):
                out = args.work / "probe" / f"{task}_{row}_seed{seed}"
                if not (out / "metrics.json").exists():
                    job(f"configs/probe_synthetic.py:{task}", log, **overrides, seed=seed, output_dir=out,
                        finetuned=args.work / "finetune" / "checkpoints", progress=False,
                        **{"data.train": args.work / "rooms" / "probe_train", "data.test": args.work / "rooms" / "probe_test"})
                metrics = json.loads((out / "metrics.json").read_text())["metrics"]
                results.setdefault(task, {}).setdefault(row, []).append(metrics)
    return results


def table(results: dict) -> str:
    lines = []
    for task, names in TASKS.items():
        lines += [f"\n**{task}** (mean ± std over {len(next(iter(results[task].values())))} probe seeds)\n",
                  "| features | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for row, runs in results[task].items():
            cells = []
            for name in names:
                values = [r[name] for r in runs]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("outputs/reproduce_synthetic"))
    parser.add_argument("--stages", default="rooms,lift,finetune,probe")
    parser.add_argument("--lift-rooms", type=int, default=6)
    parser.add_argument("--lift-width", type=int, default=160)
    parser.add_argument("--lift-height", type=int, default=108)
    parser.add_argument("--finetune-epochs", type=float, default=5.0)
    parser.add_argument("--probe-train-rooms", type=int, default=8)
    parser.add_argument("--probe-test-rooms", type=int, default=4)
    parser.add_argument("--probe-views", type=int, default=12)
    parser.add_argument("--probe-width", type=int, default=320)
    parser.add_argument("--probe-height", type=int, default=216)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    with open(args.work / "commands.log", "a") as log:
        for name in ("rooms", "lift", "finetune"):
            if name in stages:
                globals()[name](args, log)
        if "probe" in stages:
            results = probe(args, log)
            (args.work / "results.json").write_text(json.dumps(results, indent=1))
            (args.work / "results.md").write_text(table(results))
            print(table(results))


if __name__ == "__main__":
    main()
