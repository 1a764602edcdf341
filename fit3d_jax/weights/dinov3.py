"""DINOv3 ViT-S/16 and B/16 state dicts, in the official layout (facebookresearch/dinov3,
``models/vision_transformer.py``: ``storage_tokens``, a fused ``qkv`` whose ``bias_mask`` zeroes
the key bias, ``rope_embed.periods``) and in HF transformers' ``DINOv3ViTModel`` layout
(``embeddings.*``, ``layer.N.attention.{q,k,v,o}_proj`` as saved, ``model.layer.N`` in memory; no key
bias), to and from this
project's hub layout (the DINOv2 official names, ``register_tokens``, no ``pos_embed``)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from fit3d_jax.weights.state_dicts import StateDict, WeightsError

OFFICIAL, HF = "dinov3", "dinov3_hf"
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.bias": "patch_embed.proj.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_HF_LAYER = {
    "norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj", "mlp.up_proj": "mlp.fc1", "mlp.down_proj": "mlp.fc2",
}
_HF_LAYER_EXACT = {"layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma"}


def layout(sd: Mapping[str, np.ndarray]) -> str | None:
    """"dinov3" (official), "dinov3_hf", or None for a state dict of another model."""
    if "storage_tokens" in sd or "rope_embed.periods" in sd:
        return OFFICIAL
    if "embeddings.patch_embeddings.weight" in sd and any(k.startswith(("layer.", "model.layer.")) for k in sd):
        return HF
    return None


def expected_periods(head_dim: int, base: float = 100.0) -> np.ndarray:
    return (base ** (2 * np.arange(head_dim // 4, dtype=np.float32) / (head_dim // 2))).astype(np.float32)


def to_hub(sd: Mapping[str, np.ndarray], source: str) -> StateDict:
    """A DINOv3 state dict in either layout -> the hub layout; what the network cannot represent
    (another RoPE base, a key bias that is not masked, untied norms, gated MLPs) is an error
    naming the key."""
    kind = layout(sd)
    if kind == OFFICIAL:
        return _from_official(sd, source)
    if kind == HF:
        return _from_hf(sd, source)
    raise WeightsError(f"{source}: not a DINOv3 state dict (no storage_tokens, rope_embed.periods or HF DINOv3ViTModel keys)")


def _from_official(sd: Mapping[str, np.ndarray], source: str) -> StateDict:
    out: StateDict = {}
    width = np.asarray(sd["cls_token"]).shape[-1] if "cls_token" in sd else None
    for key, value in sd.items():
        value = np.asarray(value, np.float32)
        if key in ("cls_norm.weight", "cls_norm.bias", "local_cls_norm.weight", "local_cls_norm.bias") or ".mlp.w1." in key:
            raise WeightsError(f"{source}: key {key!r}: untied CLS norms and SwiGLU MLPs (DINOv3 ViT-L and larger, S+, H+) "
                               "are not supported; ViT-S/16 and B/16 are")
        if key == "rope_embed.periods":
            head_dim = 4 * len(value)
            if width is None or not head_dim or width % head_dim or not np.allclose(value, expected_periods(head_dim), rtol=1e-6):
                raise WeightsError(f"{source}: key {key!r} is not the RoPE periods of base 100")
        elif key.endswith(".attn.qkv.bias_mask"):
            third = len(value) // 3
            if not (np.all(value[:third] == 1) and np.all(value[third : 2 * third] == 0) and np.all(value[2 * third :] == 1)):
                raise WeightsError(f"{source}: key {key!r} does not mask exactly the key bias (expected 1, 0, 1 thirds)")
        elif key == "storage_tokens":
            out["register_tokens"] = value
        else:
            out[key] = value
    return out


def _from_hf(sd: Mapping[str, np.ndarray], source: str) -> StateDict:
    out: StateDict = {}
    qkv: dict[int, dict[str, np.ndarray]] = {}
    for key, value in sd.items():
        value = np.asarray(value, np.float32)
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif key == "embeddings.mask_token":
            out["mask_token"] = value.reshape(1, -1)
        elif m := re.fullmatch(r"(?:model\.)?layer\.(\d+)\.(.+)\.(weight|bias|lambda1)", key):
            layer, module, leaf = int(m.group(1)), m.group(2), m.group(3)
            if f"{module}.{leaf}" in _HF_LAYER_EXACT:
                out[f"blocks.{layer}.{_HF_LAYER_EXACT[module + '.' + leaf]}"] = value
            elif module in ("attention.q_proj", "attention.k_proj", "attention.v_proj"):
                qkv.setdefault(layer, {})[f"{module[10]}.{leaf}"] = value
            elif module in _HF_LAYER:
                out[f"blocks.{layer}.{_HF_LAYER[module]}.{leaf}"] = value
            else:
                raise WeightsError(f"{source}: unexpected key {key!r} (gated MLPs and other DINOv3 variants are not supported)")
        else:
            raise WeightsError(f"{source}: unexpected key {key!r}")
    for layer, parts in sorted(qkv.items()):
        missing = [f"layer.{layer}.attention.{p}_proj.weight" for p in "qkv" if f"{p}.weight" not in parts]
        missing += [f"layer.{layer}.attention.{p}_proj.bias" for p in "qv" if f"{p}.bias" not in parts]
        if missing:
            raise WeightsError(f"{source}: missing key {missing[0]!r}")
        if "k.bias" in parts:
            raise WeightsError(f"{source}: key 'layer.{layer}.attention.k_proj.bias': DINOv3 has no key bias")
        out[f"blocks.{layer}.attn.qkv.weight"] = np.concatenate([parts["q.weight"], parts["k.weight"], parts["v.weight"]])
        out[f"blocks.{layer}.attn.qkv.bias"] = np.concatenate([parts["q.bias"], np.zeros_like(parts["q.bias"]), parts["v.bias"]])
    return out


def to_official(sd: Mapping[str, np.ndarray], head_dim: int, base: float = 100.0) -> StateDict:
    """Hub -> the official DINOv3 layout (what ``dinov3.hub.backbones`` loads): storage tokens, the
    key-bias mask and the RoPE periods as the buffers the official model keeps."""
    out: StateDict = {}
    for key, value in sd.items():
        out["storage_tokens" if key == "register_tokens" else key] = value
        if key.endswith(".attn.qkv.bias"):
            third = len(value) // 3
            out[key + "_mask"] = np.concatenate([np.ones(third), np.zeros(third), np.ones(third)]).astype(np.float32)
    out["rope_embed.periods"] = expected_periods(head_dim, base)
    return out
