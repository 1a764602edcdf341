"""Job ``import_weights``: any supported DINOv2 checkpoint -> Orbax checkpoint (params + config)."""

from __future__ import annotations

import ml_collections

from fit3d_jax.config_errors import ConfigError
from fit3d_jax.jobs.weights_fields import load_configured_weights
from fit3d_jax.weights import load_params, params_equal, save_params


def run(config: ml_collections.ConfigDict) -> None:
    if not config.output:
        raise ConfigError("config.output must name the Orbax checkpoint directory to write")
    weights = load_configured_weights(config)
    directory = save_params(config.output, weights.params, weights.config)
    params, model_config = load_params(directory)
    if model_config != weights.config or not params_equal(params, weights.params):
        raise RuntimeError(f"{directory}: re-loaded checkpoint differs from the imported weights")
    print(f"import_weights: wrote {directory} ({weights.config.describe()}, verified bit-exact)")
