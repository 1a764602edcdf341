"""configs/<file>'s get_config([argument]), as ``--config=configs/<file>[:argument]`` loads it."""

from __future__ import annotations

from pathlib import Path

from fit3d_jax.jobs import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load(file_name: str, argument: str | None = None):
    return load_config(str(CONFIGS / file_name) + (f":{argument}" if argument else ""))


def with_fields(file_name: str, **fields):
    """``load(file_name)`` with ``fields`` set, as ``--config.<field>=`` overrides would."""
    config = load(file_name)
    config.update(fields)
    return config
