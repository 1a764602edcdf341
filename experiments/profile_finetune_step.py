"""Stage II's model step alone (ViT-S/14 at 574x868, bfloat16, 2 views per device) over all
devices, under XLA flag variants: the median step time and how long the jitted call takes to
return (host launch time). Each variant runs in its own process (XLA reads its flags once).

    python experiments/profile_finetune_step.py --out results/profile_finetune_step.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "default": "",
    "latency_hiding_scheduler": "--xla_gpu_enable_latency_hiding_scheduler=true",
    "command_buffer_collectives": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,COLLECTIVES",
    "no_command_buffer": "--xla_gpu_enable_command_buffer=",
    # Smaller combined all-reduces, so that the scheduler can overlap them with the backward.
    "combine_4mb": "--xla_gpu_all_reduce_combine_threshold_bytes=4194304",
    "lhs_combine_4mb": "--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_all_reduce_combine_threshold_bytes=4194304",
}


def child() -> dict:
    import jax
    import jax.numpy as jnp
    from bench_finetune import model_step
    from timing import median_ms

    from fit3d_jax.finetune import train
    from fit3d_jax.models.dinov2 import init_params, vit_config

    config = vit_config("vits14")
    recipe = train.Recipe(batch_size=2 * jax.device_count())
    run = model_step(config, init_params(config), recipe, (574, 868), (41, 62), jnp.bfloat16)
    step_ms = median_ms(run, jax.block_until_ready, warmup=3)
    launches = []
    for _ in range(20):  # back to back, synchronised only at the end: how long each call holds the host
        t0 = time.perf_counter()
        metrics = run()
        launches.append((time.perf_counter() - t0) * 1e3)
    jax.block_until_ready(metrics)
    return {"devices": jax.device_count(), "step_ms": step_ms, "launch_ms_median": sorted(launches)[10]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()), flush=True)
        return
    results = {}
    for name in args.variants:
        env = os.environ | {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + VARIANTS[name]).strip(), "NCCL_DEBUG": "INFO"}
        proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, cwd=Path(__file__).parent, check=False)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]  # NCCL logs to stdout too
        results[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr[-1500:]}
        results[name]["xla_flags"] = VARIANTS[name]
        # How NCCL connects the devices (P2P over NVLink, shared host memory, ...), from its log.
        results[name]["nccl_transport"] = sorted({l.split("NCCL INFO", 1)[-1].strip() for l in (proc.stdout + proc.stderr).splitlines() if " via " in l})[:6]
        print(name, json.dumps(results[name])[:300], flush=True)
    report = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
