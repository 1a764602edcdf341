"""The benchmarks' one timing loop: warm up, then time ``runs`` calls, each synchronised."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


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
