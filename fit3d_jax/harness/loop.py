"""A training run's bookkeeping around the stage's own loop (as the Flax examples' train loops):
progress (a tqdm bar with steps/s and ETA; clu's ReportProgress times the named sections), metrics
every ``log_every`` steps and at the end, checkpoints every ``checkpoint_every`` steps and at the
end, and the non-finite guard wherever the host synchronises.

    loop = TrainLoop("lift scene", out, total=30_000, start=resumed_step, ...)
    with loop:
        for step in range(loop.start, loop.total):
            state, metrics = train_step(state, ...)
            with loop.timed("density control"):
                ...
            loop.step_done(step + 1, state.nonfinite, metrics, save=lambda: checkpoints.save(...))
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from fit3d_jax.harness import guard
from fit3d_jax.harness.writers import create_writer


def periodic(step: int, every: int, total: int) -> bool:
    """Due every ``every`` steps and at the last step (big_vision's ``itstime`` without the timer)."""
    return step % every == 0 or step == total


class TrainLoop:
    def __init__(self, name: str, workdir: Path, *, total: int, start: int, log_every: int, checkpoint_every: int,
                 progress: bool, guarded: Sequence[str], unit: str = "step"):
        from clu import periodic_actions  # after fit3d_jax.harness has made clu importable without TensorFlow

        self.name, self.total, self.start = name, total, start
        self.log_every, self.checkpoint_every, self.guarded = log_every, checkpoint_every, tuple(guarded)
        first = jax.process_index() == 0
        self.writer = create_writer(workdir, enabled=first)
        self.report = periodic_actions.ReportProgress(num_train_steps=total, every_secs=None, every_steps=max(log_every, 1))
        self.bar = tqdm(total=total, initial=start, desc=name, unit=unit, disable=not (progress and first))
        self.lines = first and not progress  # without the bar, a line per logged step says the run is alive
        self.logged: list[dict] = []  # each logged step's scalars and its "step"
        self._clock = (start, time.perf_counter())

    def __enter__(self) -> TrainLoop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def timed(self, section: str) -> contextlib.AbstractContextManager:
        """The host's time in ``section``, for ``time_split`` (clu's timed sections, measured on the
        host: clu's device-side measurement lands later, in a side thread, after ``time_split`` may
        have been read; sections that need the device's time end in a sync of their own)."""
        return self.report.timed(section, wait_jax_async_dispatch=False)

    def check(self, record: guard.NonFinite) -> None:
        """The guard, now (a sync): raises NonFiniteError if a watched quantity went non-finite."""
        guard.check(record, self.guarded, self.name)

    def step_done(self, step: int, record: guard.NonFinite, metrics: Mapping | Callable[[], Mapping],
                  save: Callable[[], None] | None = None) -> dict | None:
        """After step ``step`` (1-based): the guard, then metrics and the checkpoint where they are
        due. Returns the logged metrics, if logged."""
        self.report(step)
        self.bar.update(step - self.bar.n)
        log = periodic(step, self.log_every, self.total)
        keep = save is not None and periodic(step, self.checkpoint_every, self.total)
        if log or keep:
            self.check(record)
        scalars = None
        if log:
            scalars = {k: float(np.asarray(v)) for k, v in (metrics() if callable(metrics) else metrics).items()}
            then_step, then = self._clock
            now = time.perf_counter()
            scalars["steps_per_second"] = (step - then_step) / max(now - then, 1e-9)
            self._clock = (step, now)
            self.writer.write_scalars(step, scalars)
            self.logged.append({"step": step} | scalars)
            shown = {k: f"{v:.4g}" for k, v in scalars.items() if k in ("loss", "feature_l1", "gaussians")}
            self.bar.set_postfix(shown)
            if self.lines:
                print(f"{self.name}: step {step}/{self.total}, " + ", ".join(f"{k} {v}" for k, v in shown.items())
                      + f", {scalars['steps_per_second']:.3g} steps/s", flush=True)
        if keep:
            with self.timed("checkpoints"):
                save()
        return scalars

    def time_split(self) -> dict[str, float]:
        """Seconds in each timed section so far."""
        return dict(self.report._time_per_part)  # clu keeps the split private; it reports it in its notes

    def close(self) -> None:
        self.bar.close()
        self.writer.flush()
        self.writer.close()
