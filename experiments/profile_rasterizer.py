"""One FiT3D step (value and gradients of mean|rgb| + mean|features|) on the benchmark scene, for
per-kernel timing under Nsight Compute:

    ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        python experiments/profile_rasterizer.py --n 1000000

The step runs twice (compilation, then the profiled one); kernels of both runs are reported, so
read the per-kernel averages, not the totals.

With --trace DIR it instead records a JAX profiler trace of a few forwards and steps (after
warm-up) and prints the GPU kernels' time per name, e.g. for the pure-JAX backend:

    python experiments/profile_rasterizer.py --backend jax --trace /tmp/trace
"""

import argparse
import collections
import gzip
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rasterizer import scene_arrays  # noqa: E402

from fit3d_jax.render import rasterize  # noqa: E402


def kernel_summary(trace_dir: Path, runs: int, top: int = 30) -> list[tuple[str, float, int]]:
    """(kernel name, ms per run, launches per run) of the GPU kernels in the trace, busiest first."""
    path = sorted(trace_dir.glob("plugins/profile/*/*.trace.json.gz"))[-1]
    events = json.load(gzip.open(path))["traceEvents"]
    gpus = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name" and "GPU" in e["args"]["name"]}
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e["pid"] in gpus:
            total[e["name"]] += e["dur"] / 1e3
            count[e["name"]] += 1
    return [(name, ms / runs, count[name] // runs) for name, ms in total.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--backend", default="ffi")
    parser.add_argument("--trace", type=Path, help="record a JAX trace here and print the kernels' time per name")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    camera, scene = scene_arrays(args.n)
    params = jax.device_put(tuple(scene))

    def loss(*p):
        out = rasterize(*p, camera, backend=args.backend)
        return jnp.abs(out.rgb).mean() + jnp.abs(out.features).mean()

    step = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6))))
    if not args.trace:
        for _ in range(2):
            jax.block_until_ready(step(*params))
        return
    forward = jax.jit(lambda *p: (lambda o: (o.rgb, o.features))(rasterize(*p, camera, backend=args.backend)))
    for name, fn in (("forward", forward), ("step", step)):
        jax.block_until_ready(fn(*params))
        t0 = time.perf_counter()
        for _ in range(args.runs):
            jax.block_until_ready(fn(*params))
        print(f"{name}: {(time.perf_counter() - t0) * 1e3 / args.runs:.2f} ms per call (synchronised)")
        out = args.trace / name
        with jax.profiler.trace(str(out), create_perfetto_trace=True):
            for _ in range(args.runs):
                jax.block_until_ready(fn(*params))
        for kernel, ms, launches in kernel_summary(out, args.runs):
            print(f"  {ms:8.3f} ms  {launches:5d}x  {kernel[:140]}")


if __name__ == "__main__":
    main()
