"""The model fields jobs share: ``weights``, ``weights_format``, ``arch``, ``interpolation``,
``input_statistics`` ('' means: the default / detect), and compute dtypes."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from fit3d_jax.errors import ConfigError
from fit3d_jax.models.dinov2 import ARCHS, FIT3D_NAMES, INPUT_STATISTICS, INTERPOLATIONS, NAMED_MODELS
from fit3d_jax.weights import FORMATS, LoadedWeights, WeightsError, load_weights


def _choice(config: ml_collections.ConfigDict, field: str, allowed) -> str | None:
    value = config[field]
    if value and value not in allowed:
        raise ConfigError(f"config.{field}={value!r} is not one of {sorted(allowed)} (or '' for the default)")
    return value or None


ARCH_NAMES = frozenset({*ARCHS, *NAMED_MODELS, *FIT3D_NAMES})  # what ``arch`` takes


def load_configured_weights(config: ml_collections.ConfigDict, source: str | None = None, arch: str | None = None,
                            field: str = "config.weights") -> LoadedWeights:
    """``load_weights`` driven by the config; bad values raise ConfigError naming the field.
    ``source`` and ``arch`` replace ``config.weights`` and ``config.arch`` (each backbone of a
    lift: ``field`` names where the source came from)."""
    kwargs = dict(
        format=_choice(config, "weights_format", FORMATS),
        arch=arch or _choice(config, "arch", ARCH_NAMES),
        interpolation=_choice(config, "interpolation", INTERPOLATIONS),
        input_statistics=_choice(config, "input_statistics", {*INPUT_STATISTICS, "model"}),
    )
    source = config.weights if source is None else source
    try:
        return load_weights(source, **kwargs)
    except WeightsError as e:
        raise ConfigError(f"{field}={source!r}: {e}") from None


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config: ml_collections.ConfigDict, field: str = "dtype", *, allow_default: bool = False):
    """The dtype ``config.<field>`` names ('' = None where ``allow_default``); else ConfigError."""
    value = config[field]
    if allow_default and value == "":
        return None
    if value not in DTYPES:
        allowed = ("'' or " if allow_default else "") + f"one of {sorted(DTYPES)}"
        raise ConfigError(f"config.{field}={value!r} is not {allowed}")
    return DTYPES[value]
