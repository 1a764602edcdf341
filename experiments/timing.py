"""The benchmarks' one timing loop (warm up, then time ``runs`` calls, each synchronised), and
GPU time per kernel class from a profiler trace."""

from __future__ import annotations

import gzip
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def timings_ms(fn: Callable, sync: Callable, *, warmup: int = 1, runs: int = 20) -> list[float]:
    """Milliseconds of each of ``runs`` calls of ``sync(fn())``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sync(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(fn: Callable, sync: Callable, *, warmup: int = 1, runs: int = 20) -> float:
    return statistics.median(timings_ms(fn, sync, warmup=warmup, runs=runs))


def summarise_kernels(durations_us: dict[str, float], calls: int, classify: Callable[[str], str]) -> dict:
    """GPU milliseconds per call, by ``classify``'s class and for the ten longest kernels."""
    classes: dict[str, float] = {}
    for name, us in durations_us.items():
        classes[classify(name)] = classes.get(classify(name), 0.0) + us / calls / 1e3
    top = sorted(durations_us.items(), key=lambda item: -item[1])[:10]
    return dict(total_ms=sum(classes.values()), classes_ms=classes, top_ms={name[:120]: us / calls / 1e3 for name, us in top})


def trace_jax(fn: Callable[[], object], folder: Path, classify: Callable[[str], str], calls: int = 5) -> dict:
    """``calls`` calls of ``fn`` (after one untraced) under the JAX profiler: the GPU kernels'
    time per call (``summarise_kernels``)."""
    import jax

    jax.block_until_ready(fn())
    with jax.profiler.trace(str(folder), create_perfetto_trace=True):
        for _ in range(calls):
            jax.block_until_ready(fn())
    events = json.load(gzip.open(max(Path(folder).rglob("perfetto_trace.json.gz"), key=os.path.getmtime)))["traceEvents"]
    gpus = {e["pid"] for e in events if e.get("ph") == "M" and e["name"] == "process_name" and "GPU" in e["args"]["name"]}
    durations: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and e["pid"] in gpus:
            durations[e["name"]] = durations.get(e["name"], 0.0) + e["dur"]
    return summarise_kernels(durations, calls, classify)
