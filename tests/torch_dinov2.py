"""Reference PyTorch DINOv2 ViT with the official module layout (facebookresearch/dinov2).

Written for the tests from the published algorithm, independently of fit3d_jax: its module
names match the official ``vision_transformer.py`` so official state dicts load with
``strict=True``, and its position-embedding interpolation follows the official code path
(scale_factor ((h + 0.1) / 37, (w + 0.1) / 37), bicubic, no antialias; register models
size=(h, w) with antialias; none at a square 37x37 grid). Inference only (no dropout/drop-path).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        assert x.shape[-2] % self.patch == 0 and x.shape[-1] % self.patch == 0, x.shape
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFNFused(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, swiglu: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (SwiGLUFFNFused if swiglu else Mlp)(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    def __init__(self, dim=384, depth=12, heads=6, num_register_tokens=0, swiglu=False, patch=14, grid=37,
                 interpolate_offset=0.1, interpolate_antialias=False):
        super().__init__()
        self.patch_size = patch
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.patch_embed = PatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, dim)) if num_register_tokens else None
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, swiglu) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()

    @classmethod
    def from_state_dict(cls, sd: dict, **kwargs) -> DinoVisionTransformer:
        """Builds the model the state dict describes (hub conventions) and loads it strictly."""
        dim = sd["cls_token"].shape[-1]
        regs = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
        kwargs = dict(
            dim=dim,
            depth=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
            heads=dim // 64,
            num_register_tokens=regs,
            swiglu="blocks.0.mlp.w12.weight" in sd,
            grid=math.isqrt(sd["pos_embed"].shape[1] - 1),
            # torch hub: register models interpolate to the target size with antialias
            interpolate_offset=0.0 if regs else 0.1,
            interpolate_antialias=bool(regs),
        ) | kwargs
        model = cls(**kwargs)
        model.load_state_dict(sd, strict=True)
        return model.eval()

    def interpolate_pos_encoding(self, x, h_px, w_px):
        npatch, n = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == n and h_px == w_px:
            return self.pos_embed
        pos = self.pos_embed.float()
        m = math.isqrt(n)
        h0, w0 = h_px // self.patch_size, w_px // self.patch_size
        if self.interpolate_offset:
            size_kwargs = dict(scale_factor=((h0 + self.interpolate_offset) / m, (w0 + self.interpolate_offset) / m))
        else:
            size_kwargs = dict(size=(h0, w0))
        grid = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, mode="bicubic", antialias=self.interpolate_antialias, **size_kwargs)
        assert grid.shape[-2:] == (h0, w0), grid.shape
        return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)], dim=1).to(x.dtype)

    def prepare_tokens(self, x):
        b, _, h_px, w_px = x.shape
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_encoding(x, h_px, w_px)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        return x

    def forward_features(self, x):
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        r = 1 + self.num_register_tokens
        return {"x_norm_clstoken": x[:, 0], "x_norm_regtokens": x[:, 1:r], "x_norm_patchtokens": x[:, r:]}

    def get_intermediate_layers(self, x, n=1, reshape=False, return_class_token=False, norm=True):
        b, _, h_px, w_px = x.shape
        tokens = self.prepare_tokens(x)
        take = range(len(self.blocks) - n, len(self.blocks)) if isinstance(n, int) else n
        outputs = []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i in take:
                outputs.append(tokens)
        if norm:
            outputs = [self.norm(o) for o in outputs]
        classes = [o[:, 0] for o in outputs]
        outputs = [o[:, 1 + self.num_register_tokens:] for o in outputs]
        if reshape:
            h0, w0 = h_px // self.patch_size, w_px // self.patch_size
            outputs = [o.reshape(b, h0, w0, -1).permute(0, 3, 1, 2).contiguous() for o in outputs]
        if return_class_token:
            return tuple(zip(outputs, classes))
        return tuple(outputs)
