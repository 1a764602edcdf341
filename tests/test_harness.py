"""The shared training harness: the non-finite guard names the exact first step without a sync per
step, checkpoints resume only the same run and pass over damaged steps, the cadence, the writers
(TensorBoard events and JSONL), and quiet logs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fit3d_jax.errors import RunError
from fit3d_jax.harness import guard
from fit3d_jax.harness.checkpoints import Checkpoints
from fit3d_jax.harness.loop import TrainLoop, periodic
from fit3d_jax.harness.writers import JSONL

REPO = Path(__file__).resolve().parents[1]


def _toy_step():
    """A jitted step whose loss goes NaN at step 7 and whose 'grad' goes infinite at step 9."""

    @jax.jit
    def step(record: guard.NonFinite, k):
        loss = jnp.where(k == 7, jnp.nan, 1.0 / k)
        grad = jnp.where(k >= 9, jnp.inf, 0.0)
        watched = {"loss": loss, "gradients": guard.all_finite({"g": grad})}
        return record.record(k, watched, ("loss", "gradients"))

    return step


def test_guard_names_the_first_non_finite_step_and_quantity():
    step, record = _toy_step(), guard.NonFinite.none()
    for k in range(1, 7):
        record = step(record, jnp.int32(k))
    guard.check(record, ("loss", "gradients"), "toy")  # all finite so far
    for k in range(7, 13):
        record = step(record, jnp.int32(k))
    with pytest.raises(guard.NonFiniteError, match=r"toy: loss not finite at step 7;"):
        guard.check(record, ("loss", "gradients"), "toy")
    with pytest.raises(guard.NonFiniteError, match=r"stage: parameters \['b'\]\['w'\] hold 2 non-finite"):
        guard.check_tree({"a": np.ones(3), "b": {"w": np.array([1.0, np.nan, np.inf])}}, "stage")


def test_all_finite_cannot_overflow_where_a_norm_would():
    big = {"x": jnp.full((4,), 3e38, jnp.float32)}
    assert bool(guard.all_finite(big)) and not np.isfinite(float(jnp.linalg.norm(big["x"])))
    assert not bool(guard.all_finite({"x": jnp.array([0.0, jnp.nan])}))


def test_periodic_is_due_on_the_cadence_and_at_the_end():
    assert [s for s in range(1, 26) if periodic(s, 10, 25)] == [10, 20, 25]


def test_checkpoints_resume_the_same_run_only(tmp_path):
    identity = {"stage": "toy", "recipe": {"lr": 0.1, "dim": 4}}
    state = {"w": np.arange(4.0)}
    checkpoints = Checkpoints(tmp_path / "ckpt", identity)
    for step in (5, 10):
        checkpoints.save(step, state=ocp.args.StandardSave({"w": state["w"] * step}))
    checkpoints.close()
    read = lambda ck: lambda step: ck.restore(step, state=ocp.args.StandardRestore(state))["state"]
    again = Checkpoints(tmp_path / "ckpt", identity)
    step, restored = again.restore_latest(read(again))
    again.close()
    assert step == 10 and np.array_equal(restored["w"], state["w"] * 10)
    other = Checkpoints(tmp_path / "ckpt", {"stage": "toy", "recipe": {"lr": 0.1, "dim": 8}})
    with pytest.raises(RunError, match=r"holds step 10 of another run; this run differs in recipe\.dim: 4 -> 8"):
        other.restore_latest(read(other))
    other.close()
    assert Checkpoints(tmp_path / "empty", identity).restore_latest(lambda s: None) is None


def test_a_damaged_step_is_passed_over_for_the_one_before(tmp_path, capsys):
    identity = {"stage": "toy"}
    checkpoints = Checkpoints(tmp_path / "ckpt", identity)
    for step in (5, 10):
        checkpoints.save(step, state=ocp.args.StandardSave({"w": np.full(3, float(step))}))
    checkpoints.close()
    for path in (tmp_path / "ckpt" / "10" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"broken")
    again = Checkpoints(tmp_path / "ckpt", identity)
    step, restored = again.restore_latest(lambda s: again.restore(s, state=ocp.args.StandardRestore({"w": np.zeros(3)}))["state"])
    again.close()
    assert step == 5 and np.array_equal(restored["w"], np.full(3, 5.0))
    assert "checkpoint step 10" in capsys.readouterr().out


def read_events(folder: Path) -> list[tuple[int, str, float]]:
    """Scalar summaries of TensorBoard event files (TFRecord framing, Event protos), read with
    tensorboardX's protobufs only."""
    from tensorboardX.proto import event_pb2

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            length = struct.unpack("<Q", data[i:i + 8])[0]
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4
            found += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
    return found


def test_loop_logs_checks_and_checkpoints_on_its_cadence(tmp_path):
    saved, step_fn, record = [], _toy_step(), guard.NonFinite.none()
    with TrainLoop("toy", tmp_path, total=6, start=0, log_every=4, checkpoint_every=3, progress=False,
                   guarded=("loss", "gradients")) as loop:
        for k in range(1, 7):
            record = step_fn(record, jnp.int32(k))
            with loop.timed("work"):
                pass
            loop.step_done(k, record, {"loss": 1.0 / k}, save=lambda k=k: saved.append(k))
        split = loop.time_split()
    assert saved == [3, 6] and "work" in split and "checkpoints" in split
    rows = [json.loads(line) for line in (tmp_path / JSONL).read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 6] and rows[0]["loss"] == 0.25 and rows[0]["steps_per_second"] > 0
    events = read_events(tmp_path)
    assert (4, "loss", 0.25) in events and any(tag == "steps_per_second" for _, tag, _ in events)


def test_loop_stops_before_logging_or_saving_a_non_finite_step(tmp_path):
    saved, step_fn, record = [], _toy_step(), guard.NonFinite.none()
    with pytest.raises(guard.NonFiniteError, match="toy: loss not finite at step 7"):
        with TrainLoop("toy", tmp_path, total=12, start=0, log_every=10, checkpoint_every=8, progress=False,
                       guarded=("loss", "gradients")) as loop:
            for k in range(1, 13):
                record = step_fn(record, jnp.int32(k))
                loop.step_done(k, record, {"loss": 1.0}, save=lambda k=k: saved.append(k))
    assert saved == [] and not (tmp_path / JSONL).read_text()


@pytest.mark.slow
def test_a_short_lift_is_quiet_and_writes_tensorboard_and_jsonl(tiny_vit, tmp_path):
    from fit3d_jax.scenes.synthetic import generate_room

    room = generate_room(tmp_path / "room", seed=5, width=48, height=32, num_train=4, num_test=1, num_points=300)
    cmd = [sys.executable, "-m", "fit3d_jax.main", "--config=configs/lift.py", f"--config.scenes={room}",
           f"--config.output_dir={tmp_path / 'out'}", "--config.budget=quick", "--config.quick.recipe.iterations=60",
           "--config.quick.strategy.densify_from=40", "--config.quick.strategy.densify_until=40", "--config.log_every=20",
           "--config.checkpoint_every=30", f"--config.weights={tiny_vit}",
           "--config.progress=False", "--config.recipe.feature_dim=4"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    library = [line for line in (proc.stdout + proc.stderr).splitlines() if line[:1] in "IWE" and line[1:5].isdigit()]
    assert len(library) <= 5, "\n".join(library)  # absl-formatted lines of Orbax / JAX
    rows = [json.loads(line) for line in (tmp_path / "out" / "room" / JSONL).read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40, 60] and all("feature_l1" in r and "gaussians" in r for r in rows)
    assert {tag for _, tag, _ in read_events(tmp_path / "out" / "room")} >= {"loss", "feature_l1", "gaussians"}
    verbose = subprocess.run(cmd + ["--config.quick.recipe.iterations=61", "--verbosity=0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert verbose.returncode == 0 and "checkpoint_manager.py" in verbose.stderr  # library INFO on request
