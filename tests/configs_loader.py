"""configs/<file>'s get_config([argument]), as ``--config=configs/<file>[:argument]`` loads it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load(file_name: str, argument: str | None = None):
    spec = importlib.util.spec_from_file_location(f"config_{Path(file_name).stem}", CONFIGS / file_name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if argument is None else module.get_config(argument)
