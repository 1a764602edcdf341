"""Orbax checkpoints of ViT parameters plus their ``ViTConfig``.

Layout (the same as one step of an ``ocp.CheckpointManager`` with these item names, so a
fine-tuning run that saves train states with items ``params`` and ``model_config`` — besides
any others — can be read here directly)::

    directory/params/        StandardSave of the Flax params tree (float32)
    directory/model_config/  JsonSave of ViTConfig.to_dict()
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from fit3d_jax.harness import outputs
from fit3d_jax.models.dinov2 import ViTConfig, param_shapes
from fit3d_jax.weights.state_dicts import WeightsError

PARAMS_ITEM = "params"
CONFIG_ITEM = "model_config"


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_params(directory: str | os.PathLike, params: dict, model_config: ViTConfig, *, overwrite: bool = False) -> Path:
    """Writes ``params`` and ``model_config`` to ``directory`` (marked as this project's); returns
    the path. A non-empty ``directory`` is replaced only when this function wrote it and
    ``overwrite`` is set; anything else there (a user's folder, a training run's checkpoints) is
    left alone, with an error."""
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        if not is_checkpoint(directory):
            raise WeightsError(f"{directory}: exists and is not an Orbax checkpoint; refusing to replace it")
        if not outputs.is_ours(directory) or not (directory / CONFIG_ITEM).is_dir():
            raise WeightsError(f"{directory}: holds an Orbax checkpoint that save_params did not write (no {outputs.MARKER} "
                               "marker; a training run's checkpoints/, say); refusing to replace it")
        if not overwrite:
            raise WeightsError(f"{directory}: holds a checkpoint already; set overwrite (config.overwrite=True) to replace it")
    host_params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    _checkpointer().save(
        directory,
        args=ocp.args.Composite(
            **{PARAMS_ITEM: ocp.args.StandardSave(host_params), CONFIG_ITEM: ocp.args.JsonSave(model_config.to_dict())}
        ),
        force=True,
    )
    outputs.claim(directory, "save_params")
    return directory


def is_checkpoint(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is a ``save_params`` directory or a CheckpointManager root."""
    directory = Path(directory)
    if (directory / CONFIG_ITEM).is_dir():
        return True
    return directory.is_dir() and any(p.name.isdigit() and (p / CONFIG_ITEM).is_dir() for p in directory.iterdir())


def _restore(restore_fn, source: str) -> tuple[dict, ViTConfig]:
    try:
        config_dict = restore_fn(ocp.args.Composite(**{CONFIG_ITEM: ocp.args.JsonRestore()}))[CONFIG_ITEM]
        config = ViTConfig.from_dict(config_dict)
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        raise WeightsError(f"{source}: cannot read item {CONFIG_ITEM!r}: {e}") from None
    target = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), param_shapes(config))
    try:
        params = restore_fn(ocp.args.Composite(**{PARAMS_ITEM: ocp.args.StandardRestore(target)}))[PARAMS_ITEM]
    except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
        raise WeightsError(f"{source}: item {PARAMS_ITEM!r} does not match its {CONFIG_ITEM} ({config.describe()}): {e}") from None
    return params, config


def load_params(directory: str | os.PathLike) -> tuple[dict, ViTConfig]:
    """Reads a ``save_params`` directory, or the latest step of a CheckpointManager directory."""
    directory = Path(directory).absolute()
    if not is_checkpoint(directory):
        raise WeightsError(f"{directory}: not an Orbax checkpoint with items {PARAMS_ITEM!r} and {CONFIG_ITEM!r}")
    if (directory / CONFIG_ITEM).is_dir():
        return _restore(lambda args: _checkpointer().restore(directory, args=args), str(directory))
    manager = ocp.CheckpointManager(directory)
    step = manager.latest_step()
    return _restore(lambda args: manager.restore(step, args=args), f"{directory} (step {step})")
