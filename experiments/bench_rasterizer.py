"""Rasterizer benchmark: fit3d_jax's CUDA kernels against gsplat, and its pure-JAX backend (the TPU
path, measured through XLA on the same GPU) against the CUDA kernels, on the same scenes, same run.

Scene (issue #3): W=876, H=584, fx=fy=438, cx=W/2, cy=H/2, identity world-to-camera; N Gaussians
with z ~ U(0.5, 6), x = u z (W/2)/fx 1.1, y = v z (H/2)/fy 1.1, u, v ~ U(-1, 1); scales
exp(normal(log 0.01, 0.5)); unit quaternions; opacity sigmoid(normal(0, 1)); SH degree 3 with
coefficients normal(0, 0.3); C=64 features normal(0, 1) (fit3d_jax.render.random_scene).

Figures per N: `forward` renders RGB and the 64 features; `step` is the FiT3D step, value and
gradients (all parameters) of mean|rgb| + mean|features| with feature gradients reaching the
features only (gsplat: an RGB call with gradients plus a 64-channel call on detached geometry).
gsplat runs with its default `channel_chunk=32` (impl `gsplat`: the 64 channels in two passes)
and with `channel_chunk=64` (impl `gsplat64`: one pass); each result records gsplat's version, so
another gsplat (its main branch, built from source) runs by putting it first on PYTHONPATH.
Median of 20 timed runs after warm-up, and the process's peak device memory, both as allocated
(JAX peak_bytes_in_use / torch max_memory_allocated) and as reserved by the allocator (JAX
peak_pool_bytes / torch max_memory_reserved); each measurement runs in its own process so peaks
do not mix. fit3d also reports a breakdown of the step. `--impls fit3d jax` measures the CUDA
kernels and backend="jax" (fit3d_jax/render/chunked.py) and tabulates jax / CUDA.

    python experiments/bench_rasterizer.py --out experiments/results/bench_rasterizer.json
    python experiments/bench_rasterizer.py --impls fit3d jax --n 250000 1000000 --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from timing import timings_ms

WIDTH, HEIGHT, FOCAL, CHANNELS = 876, 584, 438.0, 64


def scene_arrays(n: int):
    from fit3d_jax.render.random_scene import front_camera, random_scene

    camera = front_camera(WIDTH, HEIGHT, focal=FOCAL)
    return camera, random_scene(n, camera, channels=CHANNELS, seed=0, scale=0.01)


def worker_fit3d(n: int, figure: str, backend: str = "ffi", **options) -> dict:
    """One figure of fit3d_jax's rasterizer with ``backend`` (and rasterize() ``options``)."""
    import jax
    import jax.numpy as jnp

    from fit3d_jax.render import ffi, rasterize

    camera, scene = scene_arrays(n)
    params = jax.device_put(tuple(scene))
    render = lambda *p: rasterize(*p, camera, backend=backend, **options)

    def loss(*p):
        out = render(*p)
        return jnp.abs(out.rgb).mean() + jnp.abs(out.features).mean(), out.n_isect

    fns = {
        "forward": jax.jit(lambda *p: (lambda o: (o.rgb, o.features))(render(*p))),
        "step": jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6)), has_aux=True)),
        # Breakdown of the step: projection alone, and projection + rasterization forward
        # keeping the sorted list (as the step's forward does).
        "project": jax.jit(lambda m, s, q, o, sh, f: ffi.project(m, s, q, o, sh, jnp.int32(3), camera.pack(), WIDTH, HEIGHT)),
        "forward_for_grad": jax.jit(
            lambda *p: jax.vjp(lambda *pp: (lambda o: (o.rgb, o.features))(render(*pp)), *p)[0]
        ),
    }
    sync = jax.block_until_ready
    impl = "fit3d_jax" if backend == "ffi" else f"fit3d_jax_{backend}"
    result = {"impl": impl, "n": n, "figure": figure, "device": jax.devices()[0].device_kind, "options": options}
    times = timings_ms(lambda: fns[figure](*params), sync, warmup=3)
    med = statistics.median(times)
    result.update(median_ms=med, min_ms=min(times), max_ms=max(times))
    if figure == "step":
        (_, n_isect), _ = fns["step"](*params)
        result["n_isect"] = int(n_isect)
    stats = jax.devices()[0].memory_stats() or {}  # None on CPU
    result["peak_gb"] = stats.get("peak_bytes_in_use", float("nan")) / 1e9  # like torch's allocated
    result["peak_reserved_gb"] = stats.get("peak_pool_bytes", float("nan")) / 1e9  # like reserved
    return result


def worker_gsplat(n: int, figure: str, channel_chunk: int = 32) -> dict:
    import gsplat
    import torch
    from gsplat import rasterization

    _, scene = scene_arrays(n)
    dev = torch.device("cuda")
    grad = figure == "step"
    p = {k: torch.from_numpy(v).to(dev).requires_grad_(grad) for k, v in scene._asdict().items()}
    viewmats = torch.eye(4, device=dev)[None]
    ks = torch.tensor([[FOCAL, 0, WIDTH / 2], [0, FOCAL, HEIGHT / 2], [0, 0, 1]], device=dev)[None]

    def call(colors, sh_degree, detach):
        g = (lambda t: t.detach()) if detach else (lambda t: t)
        out, _, _ = rasterization(
            g(p["means"]), g(p["quats"]), g(p["scales"]), g(p["opacities"]), colors, viewmats, ks, WIDTH, HEIGHT, sh_degree=sh_degree,
            channel_chunk=channel_chunk,
        )
        return out

    def forward():
        with torch.no_grad():
            return call(p["sh"], 3, False), call(p["features"], None, False)

    def step():
        for t in p.values():
            t.grad = None
        rgb = call(p["sh"], 3, False)
        feat = call(p["features"], None, True)
        loss = rgb.abs().mean() + feat.abs().mean()
        loss.backward()
        return loss

    torch.cuda.reset_peak_memory_stats()
    times = timings_ms(forward if figure == "forward" else step, lambda _: torch.cuda.synchronize(), warmup=3)
    med = statistics.median(times)
    return {
        "impl": "gsplat" if channel_chunk == 32 else f"gsplat{channel_chunk}",
        "version": gsplat.__version__,
        "channel_chunk": channel_chunk,
        "n": n,
        "figure": figure,
        "device": torch.cuda.get_device_name(),
        "median_ms": med,
        "min_ms": min(times),
        "max_ms": max(times),
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
        "peak_reserved_gb": torch.cuda.max_memory_reserved() / 1e9,
    }


WORKERS = {"fit3d": worker_fit3d, "gsplat": worker_gsplat, "gsplat64": lambda n, figure: worker_gsplat(n, figure, 64),
           "jax": lambda n, figure: worker_fit3d(n, figure, backend="jax")}
IMPL_NAMES = {"fit3d": "fit3d_jax", "gsplat": "gsplat", "gsplat64": "gsplat64", "jax": "fit3d_jax_jax"}


def run_worker(impl: str, n: int, figure: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, "--n", str(n), "--figure", figure]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"impl": IMPL_NAMES[impl], "n": n, "figure": figure, "error": proc.stderr[-2000:]}
    return json.loads(lines[-1])


def ratio_table(results: list[dict], impl: str, base: str, title: str) -> list[str]:
    """Forward, step and step peaks of ``impl`` against ``base``, one row per N."""
    by = {(r["impl"], r["n"], r["figure"]): r for r in results}
    rows = [
        f"| N | forward {title} (ms) | ratio | step {title} (ms) | ratio | peak allocated, step, {title} (GB) | ratio "
        "| peak reserved, step (GB) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r["n"] for r in results}):
        cells = [f"{n:,}"]
        for fig, key in (("forward", "median_ms"), ("step", "median_ms"), ("step", "peak_gb"), ("step", "peak_reserved_gb")):
            a, b = by.get((impl, n, fig), {}), by.get((base, n, fig), {})
            if key in a and key in b:
                cells += [f"{a[key]:.2f} / {b[key]:.2f}", f"{a[key] / b[key]:.2f}x"]
            else:
                cells += [f"{a.get(key, 'n/a')} / {b.get(key, 'n/a')}", "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def table(results: list[dict]) -> str:
    impls = {r["impl"] for r in results}
    by = {(r["impl"], r["n"], r["figure"]): r for r in results}
    parts = []
    for gsplat in sorted(i for i in impls if i.startswith("gsplat")):
        parts += ratio_table(results, "fit3d_jax", gsplat, f"fit3d / {gsplat}") + [""]
    best = []
    for n in sorted({r["n"] for r in results}):
        peers = [r for r in results if r["n"] == n and r["figure"] == "step" and r["impl"].startswith("gsplat") and "median_ms" in r]
        ours = by.get(("fit3d_jax", n, "step"), {})
        if peers and "median_ms" in ours:
            top = min(peers, key=lambda r: r["median_ms"])
            best.append(f"N={n:,}: fit3d {ours['median_ms']:.2f} ms = {ours['median_ms'] / top['median_ms']:.2f}x the best gsplat step "
                        f"({top['impl']} {top.get('version', '?')}, {top['median_ms']:.2f} ms)")
    if best:
        parts += ["FiT3D step against the best gsplat setting: " + "; ".join(best), ""]
    if "fit3d_jax_jax" in impls:
        parts += ratio_table(results, "fit3d_jax_jax", "fit3d_jax", "jax / CUDA") + [""]
    extra = ["fit3d_jax step breakdown (ms): " + "; ".join(
        f"N={n:,}: project {by[('fit3d_jax', n, 'project')]['median_ms']:.2f}, project+raster fwd "
        f"{by[('fit3d_jax', n, 'forward_for_grad')]['median_ms']:.2f}, step {by[('fit3d_jax', n, 'step')]['median_ms']:.2f}, "
        f"n_isect {by[('fit3d_jax', n, 'step')].get('n_isect')}"
        for n in sorted({r["n"] for r in results})
        if all(("fit3d_jax", n, f) in by and "median_ms" in by[("fit3d_jax", n, f)] for f in ("project", "forward_for_grad", "step"))
    )]
    return "\n".join(parts + extra)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--n", type=int, nargs="+", default=[250_000, 1_000_000, 3_000_000])
    parser.add_argument("--figure", default="step")
    parser.add_argument("--impls", nargs="+", default=["fit3d", "gsplat", "gsplat64"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.n[0], args.figure)), flush=True)
        return
    results = []
    for n in args.n:
        for impl in args.impls:
            figures = ["forward", "step"] + (["project", "forward_for_grad"] if impl == "fit3d" else [])
            for figure in figures:
                r = run_worker(impl, n, figure)
                print(json.dumps(r)[:400], flush=True)
                results.append(r)
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        args.out.with_suffix(".md").write_text(table(results) + "\n")


if __name__ == "__main__":
    main()
