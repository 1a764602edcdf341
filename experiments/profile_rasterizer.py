"""One FiT3D step (value and gradients of mean|rgb| + mean|features|) on the benchmark scene, for
per-kernel timing under Nsight Compute:

    ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        python experiments/profile_rasterizer.py --n 1000000

The step runs twice (compilation, then the profiled one); kernels of both runs are reported, so
read the per-kernel averages, not the totals.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rasterizer import scene_arrays  # noqa: E402

from fit3d_jax.render import rasterize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    args = parser.parse_args()
    camera, scene = scene_arrays(args.n)
    params = jax.device_put(tuple(scene))

    def loss(*p):
        out = rasterize(*p, camera, backend="ffi")
        return jnp.abs(out.rgb).mean() + jnp.abs(out.features).mean()

    step = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6))))
    for _ in range(2):
        jax.block_until_ready(step(*params))


if __name__ == "__main__":
    main()
