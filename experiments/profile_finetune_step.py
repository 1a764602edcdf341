"""Stage II's model step alone (ViT-S/14 at 574x868, bfloat16, 2 views per device) over all
devices, under variants of XLA flags, NCCL settings and the gradient sum: the median step time
(each step synchronised), the mean of 20 steps queued back to back, and how long the jitted call
takes to return (host launch time). Each variant runs in its own process (XLA and NCCL read
their settings once). ``--trace DIR`` also writes a JAX profiler trace (Perfetto JSON) of five
steps of each variant.

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

# Each variant: environment settings added for its process.
VARIANTS = {
    "default": {},
    "latency_hiding_scheduler": {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true"},
    "command_buffer_collectives": {"XLA_FLAGS": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,COLLECTIVES"},
    "no_command_buffer": {"XLA_FLAGS": "--xla_gpu_enable_command_buffer="},
    # Smaller combined all-reduces, so that the scheduler can overlap them with the backward.
    "combine_4mb": {"XLA_FLAGS": "--xla_gpu_all_reduce_combine_threshold_bytes=4194304"},
    "lhs_combine_4mb": {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_all_reduce_combine_threshold_bytes=4194304"},
    # More NCCL channels (thread blocks) per all-reduce: more of NVLink's bandwidth.
    "nccl_16_channels": {"NCCL_MIN_NCHANNELS": "16"},
    # Not a setting: the gradients summed one psum per tensor (before train.psum_gradients
    # concatenated them), left to XLA's all-reduce combiner.
    "per_tensor_psum": {},
}


def psum_per_tensor(grads, reduce_dtype, axis="data"):
    import jax

    def one(g):
        dtype = reduce_dtype if g.size >= 1 << 16 else g.dtype
        return jax.lax.psum(g.astype(dtype), axis).astype(g.dtype)

    return jax.tree.map(one, grads)


def child(variant: str, trace: Path | None) -> dict:
    import jax
    import jax.numpy as jnp
    from bench_finetune import model_step

    from fit3d_jax.finetune import train
    from fit3d_jax.models.dinov2 import init_params, vit_config
    from timing import median_ms

    if variant == "per_tensor_psum":
        train.psum_gradients = psum_per_tensor
    config = vit_config("vits14")
    recipe = train.Recipe(batch_size=2 * jax.device_count())
    run = model_step(config, init_params(config), recipe, (574, 868), (41, 62), jnp.bfloat16)
    step_ms = median_ms(run, jax.block_until_ready, warmup=3)
    launches = []
    start = time.perf_counter()
    for _ in range(20):  # back to back, synchronised only at the end: how long each call holds the host
        t0 = time.perf_counter()
        metrics = run()
        launches.append((time.perf_counter() - t0) * 1e3)
    jax.block_until_ready(metrics)
    pipelined_ms = (time.perf_counter() - start) * 1e3 / 20
    if trace:
        with jax.profiler.trace(trace / variant, create_perfetto_trace=True):
            for _ in range(5):
                metrics = run()
            jax.block_until_ready(metrics)
    return {"devices": jax.device_count(), "step_ms": step_ms, "launch_ms_median": sorted(launches)[10],
            "pipelined_step_ms": pipelined_ms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", default="", help="(internal) run this variant here")
    parser.add_argument("--trace", type=Path, help="write a profiler trace of each variant under this folder")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.trace)), flush=True)
        return
    results = {}
    for name in args.variants:
        added = VARIANTS[name]
        env = os.environ | added | {"NCCL_DEBUG": "INFO"}
        env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + added.get("XLA_FLAGS", "")).strip()
        trace = ["--trace", str(args.trace.absolute())] if args.trace else []
        proc = subprocess.run([sys.executable, __file__, "--child", name, *trace], env=env, capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]  # NCCL logs to stdout too
        results[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr[-1500:]}
        results[name]["settings"] = VARIANTS[name]
        # How NCCL connects the devices (P2P over NVLink, shared host memory, ...), from its log.
        log = (proc.stdout + proc.stderr).splitlines()
        results[name]["nccl_transport"] = sorted({line.split("NCCL INFO", 1)[-1].strip() for line in log if " via " in line})[:6]
        print(name, json.dumps(results[name])[:300], flush=True)
    report = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
