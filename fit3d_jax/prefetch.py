"""Background producer of per-step host batches: ``make(step)`` for steps start .. stop - 1, with
``depth`` steps in flight on as many threads (so slow host preparation overlaps across batches,
not only within one), handed out in step order; errors are re-raised where the batch is taken."""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    def __init__(self, make: Callable[[int], T], start: int, stop: int, depth: int = 2):
        self.make, self.next_step, self.stop = make, start, stop
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, depth))
        self.pending: collections.deque[concurrent.futures.Future] = collections.deque()
        for _ in range(max(1, depth)):
            self._submit()

    def _submit(self) -> None:
        if self.next_step < self.stop:
            self.pending.append(self.pool.submit(self.make, self.next_step))
            self.next_step += 1

    def next(self) -> T:
        if not self.pending:
            raise StopIteration("no steps left")
        future = self.pending.popleft()
        self._submit()
        return future.result()  # re-raises whatever make() raised, KeyboardInterrupt included

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
