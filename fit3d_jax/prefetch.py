"""A background producer of per-step host batches: ``make(step)`` for steps start .. stop - 1,
``depth`` steps ahead of the consumer, with errors re-raised where the batch is taken."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    def __init__(self, make: Callable[[int], T], start: int, stop: int, depth: int = 2):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop_event = threading.Event()

        def produce():
            for step in range(start, stop):
                if self.stop_event.is_set():
                    return
                try:
                    item = make(step)
                except BaseException as e:  # delivered to the consumer, which raises it
                    item = e
                self.queue.put(item)

        self.thread = threading.Thread(target=produce, daemon=True)
        self.thread.start()

    def next(self) -> T:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop_event.set()
        while not self.queue.empty():
            self.queue.get_nowait()
