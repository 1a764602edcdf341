"""Resumable runs: one Orbax checkpoint per saved step, the newest ``keep`` kept.

Every stage saves through this class and names its own items, each with its ``ocp.args``
(``StandardSave``/``JsonSave`` to save, ``StandardRestore``/``JsonRestore`` to restore). Saves are
asynchronous; ``close`` waits for them, so a run must close its checkpoints before it returns.
"""

from __future__ import annotations

import os
from pathlib import Path

import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, **items: ocp.args.CheckpointArgs) -> None:
        self.manager.save(int(step), args=ocp.args.Composite(**items))

    def restore(self, step: int, **items: ocp.args.CheckpointArgs) -> dict:
        """The named items of ``step`` (only those named are read)."""
        return dict(self.manager.restore(step, args=ocp.args.Composite(**items)))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
