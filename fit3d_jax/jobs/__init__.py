"""One module per job; each exposes ``run(config) -> None``. ``main.py`` dispatches on ``config.job``."""

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
