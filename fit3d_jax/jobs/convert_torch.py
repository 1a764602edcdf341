"""Job ``convert_torch``: weights (an Orbax checkpoint, or any source ``load_weights`` reads) ->
``.pth``: the official DINOv2 state dict for a DINOv2 model, plus a timm-format file on request;
the official DINOv3 state dict for a DINOv3 model; timm's state dict for the other timm models
(CLIP, MAE, DeiT-III), which have no other layout. Every file is read back and checked before
the job reports success."""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np

from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.models.dinov2 import HEAD_DIM
from fit3d_jax.weights import (
    WeightsError,
    export_dinov3,
    export_official,
    export_timm,
    flax_to_official,
    load_weights,
    official_to_timm,
    params_equal,
    read_state_dict,
)


def _check_suffix(config: ml_collections.ConfigDict, field: str, suffixes: tuple[str, ...]) -> None:
    if config[field] and Path(config[field]).suffix not in suffixes:
        raise ConfigError(f"config.{field}={config[field]!r} must end in one of {suffixes}")


def run(config: ml_collections.ConfigDict) -> None:
    if not config.output:
        raise ConfigError("config.output must name the .pth file to write")
    _check_suffix(config, "output", (".pth", ".pt"))
    _check_suffix(config, "timm_output", (".safetensors", ".pth", ".pt", ".bin"))
    inputs = [Path(config.checkpoint)] if Path(config.checkpoint).exists() else []
    for field in ("output", "timm_output"):
        if config[field]:
            outputs.claim_output_file(config[field], f"config.{field}", config.overwrite, inputs)
    try:
        weights = load_weights(config.checkpoint)
    except WeightsError as e:
        raise ConfigError(f"config.checkpoint={config.checkpoint!r}: {e}") from None

    c = weights.config
    if c.embed_dim != HEAD_DIM * c.num_heads:  # PyTorch's files do not say the head count: readers infer 64-wide heads
        raise ConfigError(f"config.checkpoint={config.checkpoint!r} holds {c.name} with {c.num_heads} heads of "
                          f"{c.embed_dim // c.num_heads} channels; a .pth can only describe {HEAD_DIM}-channel heads (every "
                          "DINOv2, DINOv3 and FiT3D backbone), so nothing was written")
    layout = "dinov3" if c.rope else "official" if c.dinov2_layout else "timm"  # the model's own PyTorch layout
    if layout != "official" and config.timm_output:
        where = "in its official layout only" if layout == "dinov3" else "in timm's layout to config.output already"
        raise ConfigError(f"config.timm_output: {c.name}{' (DINOv3)' if c.rope else ''} is written {where}")
    timm_only = layout == "timm"  # a CLIP / MAE / DeiT-III model
    timm_output = config.output if timm_only else config.timm_output
    if not timm_only:
        written = (export_dinov3(weights.params, c, config.output) if c.rope else export_official(weights.params, config.output))
        if not params_equal(load_weights(written, format=layout, announce=False).params, weights.params):
            raise RuntimeError(f"{written}: re-loaded parameters differ from the source")
        what = f"official DINOv3 state dict of {c.name}" if c.rope else "official DINOv2 state dict"
        print(f"convert_torch: wrote {written.absolute()} ({what}, verified bit-exact)")

    if timm_output:
        timm = export_timm(weights.params, timm_output)
        expected = official_to_timm(flax_to_official(weights.params))
        written = read_state_dict(timm)
        if written.keys() != expected.keys() or not all(np.array_equal(written[k], expected[k]) for k in expected):
            raise RuntimeError(f"{timm}: re-read tensors differ from the timm conversion")
        reloaded = load_weights(timm, format="timm", announce=False)  # and it imports as a timm checkpoint
        if timm_only and not params_equal(reloaded.params, weights.params):
            raise RuntimeError(f"{timm}: re-loaded parameters differ from the source")
        print(f"convert_torch: wrote {timm.absolute()} (timm state dict of {weights.config.name}, verified)")
