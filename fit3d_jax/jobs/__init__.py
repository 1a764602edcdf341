"""One module per job; each exposes ``run(config) -> None``. ``main.py`` dispatches on ``config.job``."""

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
