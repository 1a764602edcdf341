"""The one entry point: ``python -m fit3d_jax.main --config=configs/<job>.py [--config.a.b=value ...]``.

Each config file defines ``get_config()`` returning an ``ml_collections.ConfigDict`` whose
``job`` field names the job module in :mod:`fit3d_jax.jobs`. Overrides are type-checked by
ml_collections; an override naming a field the config does not have is rejected here with the
list of fields it does have (ml_collections alone reports only ``AttributeError``).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from fit3d_jax import jobs
from fit3d_jax.errors import FitError
from fit3d_jax.jobs import JOBS

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to an experiment config (configs/*.py).", lock_config=True
)


def _flatten_keys(cfg, prefix: str = "") -> list[str]:
    keys = []
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        keys.append(path)
        if hasattr(value, "items"):
            keys.extend(_flatten_keys(value, path + "."))
    return keys


def _check_overrides(argv: Sequence[str]) -> None:
    """Rejects ``--config.x=...`` overrides whose field does not exist, naming the known ones."""
    config_path = None
    overrides = []
    for arg in argv[1:]:
        if arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
        elif arg.startswith("--config."):
            overrides.append(arg[len("--config."):].split("=", 1)[0])
    if config_path is None or not overrides:
        return
    try:
        cfg = jobs.load_config(config_path)
    except Exception:  # the flag parser reports unreadable config files itself
        return
    known = set(_flatten_keys(cfg))
    unknown = [o for o in overrides if o not in known]
    if unknown:
        raise SystemExit(
            f"error: {config_path} has no field {', '.join(repr(u) for u in unknown)}.\n"
            f"Known fields: {', '.join(sorted(known))}"
        )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:  # libraries' INFO lines (Orbax, absl, JAX) only on request
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config=configs/<job>.py is required (see README.md).")
    job = config.get("job")
    if job not in JOBS:
        raise app.UsageError(f"config.job={job!r} is not one of {sorted(JOBS)}")
    jobs.set_overridden(config_flags.get_override_values(flags.FLAGS["config"]))
    try:
        jobs.run(config)
    except FitError as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # the system refused something (disk full, permissions): it names the file
        raise SystemExit(f"error: {e}") from None
    except Exception:
        traceback.print_exc()
        raise SystemExit(f"error: this is a bug in fit3d_jax, not in your settings or data: the traceback above says where. "
                         f"Please report it with the command line (job {job!r}).") from None


def cli() -> None:
    for arg in sys.argv[1:]:
        if arg.startswith("--config="):
            jobs.config_folder_on_path(arg.split("=", 1)[1])
    _check_overrides(sys.argv)
    app.run(main)


if __name__ == "__main__":
    cli()
