"""One module per job; each exposes ``run(config) -> None``. ``run`` here checks every field's range
(``jobs.ranges``), says what the settings make meaningless, and dispatches on ``config.job``."""

import importlib
import importlib.util
import sys
from pathlib import Path

_overridden: frozenset[str] = frozenset()

JOBS = {
    "lift": "fit3d_jax.jobs.lift",
    "finetune": "fit3d_jax.jobs.finetune",
    "features": "fit3d_jax.jobs.features",
    "convert_torch": "fit3d_jax.jobs.convert_torch",
    "import_weights": "fit3d_jax.jobs.import_weights",
    "generate_rooms": "fit3d_jax.jobs.generate_rooms",
    "prepare_scannetpp": "fit3d_jax.jobs.prepare_scannetpp",
    "probe": "fit3d_jax.jobs.probe",
}


def set_overridden(fields) -> None:
    """Called by ``main``: the config fields the command line set (``--config.a.b=...``)."""
    global _overridden
    _overridden = frozenset(fields)


def overridden(field: str) -> bool:
    """Whether the command line set ``field`` (dotted, below ``config``): presets must not replace it."""
    return field in _overridden


def config_folder_on_path(spec: str) -> None:
    """Puts the folder of ``--config=<folder>/<file>.py[:arg]`` first on the import path, so that
    the config files there import their shared ``common`` module."""
    folder = str(Path(spec.partition(":")[0]).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)


def load_config(spec: str):
    """``<file>.py[:argument]``'s ``get_config([argument])``, as ``--config=`` loads it."""
    path, _, argument = spec.partition(":")
    config_folder_on_path(spec)
    module_spec = importlib.util.spec_from_file_location(f"config_{Path(path).stem}", path)
    if module_spec is None:
        raise FileNotFoundError(f"{path}: no such config file")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(argument) if argument else module.get_config()


def run(config) -> None:
    """Runs job ``config.job`` after checking every numeric and enumerated field's range; notes on
    settings that make part of the run meaningless are printed first."""
    from fit3d_jax.jobs import ranges  # here: importing a job pulls in JAX, the dispatcher need not

    ranges.check(config)
    for line in ranges.notes(config):
        print(line, flush=True)
    importlib.import_module(JOBS[config.job]).run(config)
