"""Test helpers: random HF DINOv2 models written in the official, timm and HF formats.

The HF -> official and official -> timm mappings here are written for the tests, independently
of fit3d_jax.weights, from the published key layouts (HF checkpoints on disk use
``attention.attention.{query,key,value}``, ``attention.output.dense``, ``mlp.weights_in/out``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import torch
import transformers
from safetensors.numpy import load_file
from safetensors.torch import save_file

from fit3d_jax.models.dinov2 import ViTConfig, param_shapes


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    registers: int = 0
    swiglu: bool = False
    depth: int = 2


SMALL_VARIANTS = (Variant("plain"), Variant("registers", registers=4), Variant("swiglu", swiglu=True))


def random_params(config: ViTConfig, seed: int = 0, scale: float = 0.1) -> dict:
    """Flax parameters with every entry random (LayerScale and mask_token included)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(np.float32), param_shapes(config))


def random_hf_model(variant: Variant, width: int = 384, seed: int = 0) -> torch.nn.Module:
    """HF Dinov2Model / Dinov2WithRegistersModel with every parameter random (so that each
    tensor's mapping matters); 37x37 position grid (image_size 518, patch 14). Built on the meta
    device (HF's own initialisation is slow and overwritten anyway)."""
    common = dict(
        hidden_size=width,
        num_hidden_layers=variant.depth,
        num_attention_heads=width // 64,
        image_size=518,
        patch_size=14,
        use_swiglu_ffn=variant.swiglu,
    )
    with torch.device("meta"):
        if variant.registers:
            model = transformers.Dinov2WithRegistersModel(
                transformers.Dinov2WithRegistersConfig(num_register_tokens=variant.registers, **common)
            )
        else:
            model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
    model = model.to_empty(device="cpu")
    assert not list(model.buffers()), "every tensor must be a parameter that gets filled below"
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif "lambda1" in name:
                p.copy_(0.5 + 0.2 * noise)
            else:
                p.copy_(0.05 * noise)
    return model.eval()


def hf_disk_to_official(hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HF checkpoint (on-disk names) -> official DINOv2 state dict."""
    top = {
        "embeddings.cls_token": "cls_token",
        "embeddings.mask_token": "mask_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    out = {new: hf[old] for old, new in top.items() if old in hf}
    depth = 1 + max(int(k.split(".")[2]) for k in hf if k.startswith("encoder.layer."))
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        out[dst + "ls1.gamma"] = hf[src + "layer_scale1.lambda1"]
        out[dst + "ls2.gamma"] = hf[src + "layer_scale2.lambda1"]
        for leaf in ("weight", "bias"):
            out[dst + f"norm1.{leaf}"] = hf[src + f"norm1.{leaf}"]
            out[dst + f"norm2.{leaf}"] = hf[src + f"norm2.{leaf}"]
            q, k, v = (hf[src + f"attention.attention.{n}.{leaf}"] for n in ("query", "key", "value"))
            out[dst + f"attn.qkv.{leaf}"] = np.concatenate([q, k, v], axis=0)
            out[dst + f"attn.proj.{leaf}"] = hf[src + f"attention.output.dense.{leaf}"]
            if src + f"mlp.weights_in.{leaf}" in hf:
                out[dst + f"mlp.w12.{leaf}"] = hf[src + f"mlp.weights_in.{leaf}"]
                out[dst + f"mlp.w3.{leaf}"] = hf[src + f"mlp.weights_out.{leaf}"]
            else:
                out[dst + f"mlp.fc1.{leaf}"] = hf[src + f"mlp.fc1.{leaf}"]
                out[dst + f"mlp.fc2.{leaf}"] = hf[src + f"mlp.fc2.{leaf}"]
    return out


def official_to_timm_reference(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """timm's layout: no mask_token, registers as reg_token; register models keep no class
    position (timm folds it into cls_token)."""
    out = {k: v for k, v in sd.items() if k != "mask_token"}
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    official: Path  # .pth
    timm_safetensors: Path
    timm_bin: Path
    hf_dir: Path  # save_pretrained directory
    hf_bin: Path  # torch.save of the in-memory state dict (transformers >= 5 renames modules)
    registers: int


def _to_torch(sd: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def write_official(model: torch.nn.Module, directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """save_pretrained to directory/hf, then the official .pth; returns it and its state dict."""
    model.save_pretrained(directory / "hf")
    official = hf_disk_to_official(load_file(directory / "hf" / "model.safetensors"))
    torch.save(_to_torch(official), directory / "official.pth")
    return directory / "official.pth", official


def write_all_formats(model: torch.nn.Module, directory: Path) -> CheckpointFiles:
    _, official = write_official(model, directory)
    files = CheckpointFiles(
        official=directory / "official.pth",
        timm_safetensors=directory / "timm.safetensors",
        timm_bin=directory / "timm.bin",
        hf_dir=directory / "hf",
        hf_bin=directory / "hf_state_dict.bin",
        registers=official["register_tokens"].shape[1] if "register_tokens" in official else 0,
    )
    timm = official_to_timm_reference(official)
    save_file(_to_torch(timm), files.timm_safetensors)
    torch.save(_to_torch(timm), files.timm_bin)
    torch.save(model.state_dict(), files.hf_bin)
    return files
