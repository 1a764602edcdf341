"""A small PyTorch reference of timm's ``VisionTransformer`` forward (timm 0.9-1.0,
``timm/models/vision_transformer.py`` and ``timm/layers/pos_embed.py``), as FiT3D creates the
models: ``num_classes=0, dynamic_img_size=True``. Written for the tests, independent of the
project's code (timm itself cannot run on this CPU machine). It loads timm state dicts strictly:
the module and parameter names are timm's.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_dinov2 import LayerScale  # the same module in timm and the official DINOv2 code


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float, layer_scale: bool):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch, bias=bias)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)  # NHWC, as with dynamic_img_size


def resample_abs_pos_embed(posemb, new_size, old_size, num_prefix_tokens):
    if posemb.shape[1] == new_size[0] * new_size[1] + num_prefix_tokens and new_size[0] == new_size[1]:
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    grid = grid.reshape(1, old_size, old_size, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_size, mode="bicubic", antialias=True)
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, -1, posemb.shape[-1])], dim=1)


class VisionTransformer(nn.Module):
    def __init__(self, *, dim: int, depth: int, heads: int, patch: int, grid: int, registers: int = 0,
                 no_embed_class: bool = False, layer_scale: bool = True, pre_norm: bool = False, eps: float = 1e-6):
        super().__init__()
        self.grid, self.no_embed_class = grid, no_embed_class
        self.num_prefix_tokens = 1 + registers
        self.patch_embed = PatchEmbed(dim, patch, bias=not pre_norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, registers, dim)) if registers else None
        positions = grid * grid + (0 if no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, dim))
        self.norm_pre = nn.LayerNorm(dim, eps=eps) if pre_norm else nn.Identity()
        self.blocks = nn.Sequential(*[Block(dim, heads, eps, layer_scale) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward_features(self, images):
        """images (B, 3, H, W) -> (B, prefix + h*w, D) after the final norm."""
        x = self.patch_embed(images)
        b, h, w, c = x.shape
        pos = resample_abs_pos_embed(self.pos_embed, (h, w), self.grid, 0 if self.no_embed_class else self.num_prefix_tokens)
        x = x.reshape(b, -1, c)
        prefix = [self.cls_token.expand(b, -1, -1)] + ([self.reg_token.expand(b, -1, -1)] if self.reg_token is not None else [])
        x = torch.cat(prefix + [x + pos], 1) if self.no_embed_class else torch.cat(prefix + [x], 1) + pos
        return self.norm(self.blocks(self.norm_pre(x)))


def reference(name: str, depth: int) -> VisionTransformer:
    """The reference for one of the six timm models FiT3D fine-tunes (``depth`` blocks)."""
    spec = {
        "vit_small_patch14_dinov2": dict(dim=384, heads=6, patch=14, grid=37),
        "vit_base_patch14_dinov2": dict(dim=768, heads=12, patch=14, grid=37),
        "vit_small_patch14_reg4_dinov2": dict(dim=384, heads=6, patch=14, grid=37, registers=4, no_embed_class=True),
        "vit_base_patch16_clip_384": dict(dim=768, heads=12, patch=16, grid=24, layer_scale=False, pre_norm=True, eps=1e-5),
        "vit_base_patch16_224": dict(dim=768, heads=12, patch=16, grid=14, layer_scale=False),
        "deit3_base_patch16_224": dict(dim=768, heads=12, patch=16, grid=14, no_embed_class=True),
    }[name]
    return VisionTransformer(depth=depth, **spec)


def randomize(model: nn.Module, seed: int) -> dict:
    """Random weights of every parameter (LayerNorms near 1 and 0), as a state dict of numpy arrays."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith(("norm1.weight", "norm2.weight")) or name in ("norm.weight", "norm_pre.weight") else 0.0
            scale = 0.02 if "pos_embed" in name or "token" in name else 1 / math.sqrt(max(p.shape[-1], 1))
            p.copy_(base + scale * torch.randn(p.shape, generator=generator))
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}
