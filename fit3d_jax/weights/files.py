"""Reading and writing state-dict files (.pth/.pt/.bin via PyTorch, .safetensors via numpy)
and telling the three DINOv2 checkpoint formats apart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fit3d_jax.weights.state_dicts import StateDict, WeightsError

FORMATS = ("official", "timm", "hf", "dinov3", "dinov3_hf")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# What an HF config.json must say for our model to reproduce the checkpoint's network.
_HF_CONFIG_REQUIREMENTS = {
    "model_type": ("dinov2", "dinov2_with_registers", "dinov3_vit"),
    "hidden_act": ("gelu",),
    "layer_norm_eps": (1e-6,),
    "mlp_ratio": (4,),
    "patch_size": (14,),
    "qkv_bias": (True,),
    "num_channels": (3,),
}


_DINOV3_CONFIG_REQUIREMENTS = {
    "hidden_act": ("gelu",),
    "layer_norm_eps": (1e-5,),
    "patch_size": (16,),
    "num_register_tokens": (4,),
    "rope_theta": (100.0,),
    "use_gated_mlp": (False,),
    "key_bias": (False,),
    "query_bias": (True,),
    "value_bias": (True,),
    "proj_bias": (True,),
    "mlp_bias": (True,),
    "num_channels": (3,),
}


def _torch():
    try:
        import torch
    except ImportError:
        raise WeightsError(
            "reading or writing .pth/.pt/.bin files needs PyTorch: pip install 'fit3d_jax[torch]'"
        ) from None
    return torch


def read_state_dict(path: Path) -> StateDict:
    """Tensors of a .safetensors or PyTorch file as float32 numpy arrays."""
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            tensors = load_file(path)
        except Exception as e:  # corrupt header, unsupported dtype, ...
            raise WeightsError(f"{path}: cannot read safetensors file: {e}") from None
        return {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    if path.suffix not in TORCH_SUFFIXES:
        raise WeightsError(f"{path}: unknown checkpoint suffix {path.suffix!r} (expected .safetensors, .pth, .pt, .bin)")
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read PyTorch file: {e}") from None
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        top = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise WeightsError(f"{path}: expected a flat state dict of tensors, found {top}")
    return {k: v.detach().float().numpy() for k, v in obj.items()}


def write_state_dict(sd: Mapping[str, np.ndarray], path: Path) -> None:
    """Writes .safetensors (no PyTorch needed) or a PyTorch state dict (.pth/.pt/.bin)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, path)
    elif path.suffix in TORCH_SUFFIXES:
        torch = _torch()
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    else:
        raise WeightsError(f"{path}: unknown checkpoint suffix {path.suffix!r} (expected .safetensors, .pth, .pt, .bin)")


def hf_weights_file(directory: Path) -> Path:
    """The weights file of an HF model directory, after checking its config.json."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise WeightsError(
            f"{directory}: neither an Orbax checkpoint (params/, model_config/) nor an HF model directory (config.json)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise WeightsError(f"{config_path}: cannot read HF config: {e}") from None
    requirements = _DINOV3_CONFIG_REQUIREMENTS if config.get("model_type") == "dinov3_vit" else _HF_CONFIG_REQUIREMENTS
    for field, allowed in requirements.items():
        if field in config and config[field] not in allowed:
            raise WeightsError(f"{config_path}: field {field!r} is {config[field]!r}; fit3d_jax supports {allowed}")
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise WeightsError(f"{directory}: HF model directory without {' or '.join(HF_WEIGHT_FILES)}")


def detect_format(sd: Mapping[str, np.ndarray]) -> str:
    """"official", "timm" or "hf" from the key names.

    timm and official files share their key names except that timm has no ``mask_token`` and
    calls the registers ``reg_token``; an official-layout file without mask_token therefore reads
    as timm (pass the format explicitly to override).
    """
    from fit3d_jax.weights import dinov3

    if kind := dinov3.layout(sd):
        return kind
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in sd):
        return "hf"
    if "reg_token" in sd or ("mask_token" not in sd and "register_tokens" not in sd):
        return "timm"
    return "official"
