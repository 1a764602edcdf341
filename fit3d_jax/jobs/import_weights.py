"""Job ``import_weights``: any supported DINOv2 checkpoint -> Orbax checkpoint (params + config)."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.jobs.weights_fields import load_configured_weights
from fit3d_jax.weights import WeightsError, load_params, params_equal, save_params


def run(config: ml_collections.ConfigDict) -> None:
    if not config.output:
        raise ConfigError("config.output must name the Orbax checkpoint directory to write")
    inputs = [Path(config.weights)] if Path(config.weights).exists() else []
    outputs.claim_output_file(config.output, "config.output", config.overwrite, inputs)
    weights = load_configured_weights(config)
    try:
        directory = save_params(config.output, weights.params, weights.config, overwrite=config.overwrite)
    except WeightsError as e:
        raise ConfigError(f"config.output: {e}") from None
    params, model_config = load_params(directory)
    if model_config != weights.config or not params_equal(params, weights.params):
        raise RuntimeError(f"{directory}: re-loaded checkpoint differs from the imported weights")
    print(f"import_weights: wrote {directory} ({weights.config.describe()}, verified bit-exact)")
