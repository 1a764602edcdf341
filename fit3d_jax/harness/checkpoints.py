"""Resumable runs: one Orbax checkpoint per saved step, the newest ``keep`` kept.

Every stage saves through this class and names its own items, each with its ``ocp.args``
(``StandardSave``/``JsonSave`` to save, ``StandardRestore``/``JsonRestore`` to restore). Saves are
asynchronous; ``close`` waits for them, so a run must close its checkpoints before it returns.

Every step also holds the run's identity (item ``identity``: what the run is of, e.g. the scene's
path and content fingerprint and the recipe). A resume checks it before it reads any array, so a
run never continues another's state; a damaged step is passed over for the previous intact one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import orbax.checkpoint as ocp

from fit3d_jax.errors import RunError

T = TypeVar("T")
IDENTITY = "identity"


def _flat(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def differences(saved: dict, current: dict) -> list[str]:
    """'field: saved -> current' for every (dotted) field that differs."""
    a, b = _flat(saved), _flat(current)
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


class Checkpoints:
    def __init__(self, directory: str | os.PathLike, identity: dict, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self.directory = Path(directory).absolute()
        self.identity = identity
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, **items: ocp.args.CheckpointArgs) -> None:
        self.manager.save(int(step), args=ocp.args.Composite(**items, **{IDENTITY: ocp.args.JsonSave(self.identity)}))

    def restore(self, step: int, **items: ocp.args.CheckpointArgs) -> dict:
        """The named items of ``step`` (only those named are read)."""
        return dict(self.manager.restore(step, args=ocp.args.Composite(**items)))

    def restore_latest(self, read: Callable[[int], T]) -> tuple[int, T] | None:
        """(step, ``read(step)``) for the newest step that is this run's and intact; None if there is
        none. A step of another run is an error naming what differs; a damaged step (``read`` or
        the identity fails to load) is passed over, with a note, for the one before it."""
        failures = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                saved = self.restore(step, **{IDENTITY: ocp.args.JsonRestore()})[IDENTITY]
            except Exception as e:  # a damaged step: any error of the reader  # noqa: BLE001
                failures.append((step, e))
                continue
            if saved != self.identity:
                raise RunError(f"{self.directory} holds step {step} of another run; this run differs in "
                               + "; ".join(differences(saved, self.identity))
                               + ". Choose another output folder or remove the old one.")
            try:
                value = read(step)
            except Exception as e:  # noqa: BLE001
                failures.append((step, e))
                continue
            for bad, error in failures:
                print(f"note: checkpoint step {bad} in {self.directory} is damaged ({type(error).__name__}: {error}); "
                      f"resuming from step {step}")
            return step, value
        if failures:
            raise RunError(f"{self.directory}: every saved step is damaged ("
                           + "; ".join(f"step {s}: {type(e).__name__}: {e}" for s, e in failures)
                           + "); remove the folder to start afresh") from failures[0][1]
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
