"""DINOv2 vision transformer (ViT-S/B/L/g, patch 14, optional registers) in Flax linen, and the
other timm VisionTransformers FiT3D fine-tunes (CLIP, MAE, DeiT-III: ``timm_config``), which
differ only in patch size, layer scale, a pre-norm, the patch bias and LayerNorm's epsilon.

Module and parameter names mirror the official state dict (``blocks.3.attn.qkv.weight`` is
``params["blocks_3"]["attn"]["qkv"]["kernel"]``, transposed), so checkpoint conversion in
:mod:`fit3d_jax.weights` is a renaming. Images are NHWC, normalised with the statistics the
config names (``input_statistics``; ImageNet's by default), with height and width multiples of the
patch size.

Precision: parameters are float32. ``dtype`` is the compute dtype of matmuls and attention;
the residual stream between blocks stays float32 (as under ``torch.autocast``). With float32
compute every matmul runs at ``matmul_precision`` (default ``"float32"``: true fp32, not TF32),
and attention on a GPU is the fused FFI kernel (3xTF32 tensor cores, float32 accuracy).

Typical calls::

    model = DinoV2(vit_config("vits14"), dtype=jnp.bfloat16)
    out = model.apply({"params": params}, images)          # ViTOutput
    out.patch_tokens                                        # (B, h, w, D)
    model.apply({"params": params}, images, n=4, reshape=True, return_class_token=True,
                method=DinoV2.get_intermediate_layers)      # like the official method
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from fit3d_jax import kernels
from fit3d_jax.models.fused_attention import CUDA_HEAD_DIM, fused_attention
from fit3d_jax.models.resample import resize_bicubic

# width, depth, heads, feed-forward type of the official models.
ARCHS: dict[str, tuple[int, int, int, str]] = {
    "vits14": (384, 12, 6, "mlp"),
    "vitb14": (768, 12, 12, "mlp"),
    "vitl14": (1024, 24, 16, "mlp"),
    "vitg14": (1536, 40, 24, "swiglu"),
}
HEAD_DIM = 64  # every DINOv2 size uses 64-dimensional heads
# Compiler options of the programs that only run the ViT forward (frozen features: the probe, stage
# I targets, the features job): cuBLAS rather than XLA's Triton GEMMs. On an H200 (2026-12-02,
# experiments/README.md) that made the bfloat16 forward 5-6 % faster (ViT-S/14, CLIP B/16), but
# stage II measured slower with it (two short pairs, 4 and 10 %, within their noise), so training
# programs keep XLA's default. Other backends ignore the option.
FORWARD_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False}
# Input normalisations (fit3d_jax.images.STATISTICS). FiT3D feeds every backbone ImageNet's; a
# model trained with other statistics has them in OWN_STATISTICS (timm's pretrained_cfg).
INPUT_STATISTICS = ("imagenet", "openai_clip")
OWN_STATISTICS = {"vit_base_patch16_clip_384": "openai_clip"}

# How the 37x37 position-embedding grid is resized to another token grid, per library:
# (offset, antialias); offset > 0 means PyTorch's scale_factor=((h+offset)/37, (w+offset)/37),
# offset 0 means size=(h, w). Register models of every library use size + antialias.
INTERPOLATIONS: dict[str, tuple[tuple[float, bool], tuple[float, bool]]] = {
    # style: (without registers, with registers)
    "official": ((0.1, False), (0.0, True)),
    "timm": ((0.0, True), (0.0, True)),
    "hf": ((0.0, False), (0.0, True)),
}


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Architecture of a DINOv2 ViT, or of another timm ``VisionTransformer`` (CLIP, MAE, DeiT-III:
    see TIMM_MODELS); JSON-serialisable via ``to_dict`` / ``from_dict``. The defaults are DINOv2's."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    ffn: Literal["mlp", "swiglu"] = "mlp"
    num_register_tokens: int = 0
    patch_size: int = 14
    pos_grid: int = 37  # the position embeddings cover a pos_grid x pos_grid token grid
    interpolation: Literal["official", "timm", "hf"] = "official"
    layer_scale: bool = True  # ls1 / ls2 in every block (DINOv2, DeiT-III)
    norm_pre: bool = False  # a LayerNorm after the position embeddings (CLIP)
    patch_bias: bool = True  # the patch embedding's bias (CLIP has none)
    norm_eps: float = 1e-6  # every LayerNorm's epsilon (CLIP, DINOv3: 1e-5)
    rope: bool = False  # DINOv3: rotary position embeddings on the patch tokens, no pos_embed
    rope_base: float = 100.0
    key_bias: bool = True  # DINOv3 masks the key part of the qkv bias to zero
    model_name: str = ""  # the named model this is, where it is one of NAMED_MODELS
    input_statistics: str = "imagenet"  # the input normalisation, one of INPUT_STATISTICS

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn must be 'mlp' or 'swiglu', got {self.ffn!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.model_name and self.model_name not in NAMED_MODELS:
            raise ValueError(f"model_name must be one of {sorted(NAMED_MODELS)}, got {self.model_name!r}")
        if self.input_statistics not in INPUT_STATISTICS:
            raise ValueError(f"input_statistics must be one of {INPUT_STATISTICS}, got {self.input_statistics!r}")
        if self.rope and self.embed_dim % (4 * self.num_heads):
            raise ValueError(f"RoPE needs head_dim {self.embed_dim // self.num_heads} to be a multiple of 4")

    @property
    def hidden_dim(self) -> int:
        """Feed-forward width; SwiGLU keeps 2/3 of 4*D rounded up to a multiple of 8 (official)."""
        hidden = 4 * self.embed_dim
        return (int(hidden * 2 / 3) + 7) // 8 * 8 if self.ffn == "swiglu" else hidden

    @property
    def own_statistics(self) -> str:
        """The input statistics this model was trained with (ImageNet's unless OWN_STATISTICS says)."""
        return OWN_STATISTICS.get(self.model_name, "imagenet")

    @property
    def pos_embed_resize(self) -> tuple[float, bool]:
        """(offset, antialias) of the position-embedding interpolation."""
        return INTERPOLATIONS[self.interpolation][self.num_register_tokens > 0]

    @property
    def arch(self) -> str | None:
        """The official arch name ("vits14", ...) if the shape is a standard DINOv2 one, else None."""
        shape = (self.embed_dim, self.depth, self.num_heads, self.ffn)
        standard = self.dinov2_layout and self.pos_grid == 37
        return next((name for name, spec in ARCHS.items() if spec == shape and standard), None)

    @property
    def dinov2_layout(self) -> bool:
        """Whether the official DINOv2 code builds this network (so its state dict layout applies)."""
        return (self.layer_scale and not self.norm_pre and self.patch_bias and self.patch_size == 14 and self.norm_eps == 1e-6
                and not self.rope and self.key_bias)

    @property
    def name(self) -> str:
        """"ViT-S/14" etc., the timm model's name, or a short description of another shape."""
        if self.model_name:
            return self.model_name
        arch = self.arch
        patch = f", patch {self.patch_size}" if self.patch_size != 14 else ""
        return f"ViT-{arch[3].upper()}/14" if arch else f"custom ViT (D={self.embed_dim}, {self.depth} blocks{patch})"

    def describe(self) -> str:
        regs = f", {self.num_register_tokens} registers" if self.num_register_tokens else ""
        positions = "RoPE" if self.rope else f"{self.interpolation} pos-embed interpolation"
        statistics = f", {self.input_statistics} input statistics" if self.input_statistics != "imagenet" else ""
        return f"{self.name}{regs}, {positions}{statistics}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ViTConfig fields {sorted(unknown)}")
        return cls(**d)


# The timm VisionTransformers FiT3D fine-tunes (hubconf.py, utils/model_utils.py; created with
# num_classes=0, dynamic_img_size=True), as ViTConfig fields. "no_embed_class" models keep no class
# position: their pos_embed has pos_grid^2 rows, read here as a zero class row (identical outputs).
TIMM_MODELS: dict[str, dict[str, Any]] = {
    "vit_small_patch14_dinov2": dict(embed_dim=384, num_heads=6, patch_size=14, pos_grid=37),
    "vit_base_patch14_dinov2": dict(embed_dim=768, num_heads=12, patch_size=14, pos_grid=37),
    "vit_small_patch14_reg4_dinov2": dict(embed_dim=384, num_heads=6, patch_size=14, pos_grid=37, num_register_tokens=4),
    "vit_base_patch16_clip_384": dict(embed_dim=768, num_heads=12, patch_size=16, pos_grid=24, layer_scale=False, norm_pre=True,
                                      patch_bias=False, norm_eps=1e-5),
    "vit_base_patch16_224": dict(embed_dim=768, num_heads=12, patch_size=16, pos_grid=14, layer_scale=False),  # MAE
    "deit3_base_patch16_224": dict(embed_dim=768, num_heads=12, patch_size=16, pos_grid=14),
}
# DINOv3 (facebookresearch/dinov3 hub/backbones.py): patch 16, 4 storage (register) tokens, RoPE
# (base 100, coordinates normalised per axis), the key bias masked, LayerNorm epsilon 1e-5.
DINOV3_MODELS: dict[str, dict[str, Any]] = {
    "dinov3_vits16": dict(embed_dim=384, num_heads=6),
    "dinov3_vitb16": dict(embed_dim=768, num_heads=12),
}
DINOV3_FIELDS = dict(patch_size=16, pos_grid=0, num_register_tokens=4, rope=True, key_bias=False, norm_eps=1e-5)
NAMED_MODELS = {**TIMM_MODELS, **{name: {**spec, **DINOV3_FIELDS} for name, spec in DINOV3_MODELS.items()}}
# FiT3D's hubconf.py entries, and the timm model each one builds, so FiT3D's names work as ``arch``.
FIT3D_HUB_NAMES = {
    "dinov2_small_fine": "vit_small_patch14_dinov2",
    "dinov2_base_fine": "vit_base_patch14_dinov2",
    "dinov2_reg_small_fine": "vit_small_patch14_reg4_dinov2",
    "clip_base_fine": "vit_base_patch16_clip_384",
    "mae_base_fine": "vit_base_patch16_224",
    "deit3_base_fine": "deit3_base_patch16_224",
}
# FiT3D's --model_name values (its hubconf's finetuned_checkpoints keys, stage I's gen_commands.py):
# the same models, the names a multi-backbone lift's backbones take.
FIT3D_MODEL_NAMES = {hub.removesuffix("_fine"): timm for hub, timm in FIT3D_HUB_NAMES.items()}
FIT3D_NAMES = {**FIT3D_HUB_NAMES, **FIT3D_MODEL_NAMES}


def timm_config(name: str, depth: int = 12) -> ViTConfig:
    """The config of one of NAMED_MODELS (``depth`` other than 12 for tests); timm's position
    interpolation for the timm models."""
    if name not in NAMED_MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(NAMED_MODELS)}")
    interpolation = "official" if name in DINOV3_MODELS else "timm"
    return ViTConfig(depth=depth, interpolation=interpolation, model_name=name if depth == 12 else "", **NAMED_MODELS[name])


def vit_config(arch: str, *, num_register_tokens: int = 0, interpolation: str = "official") -> ViTConfig:
    """Config of an official model: arch in ARCHS, e.g. ``vit_config("vits14", num_register_tokens=4)``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    width, depth, heads, ffn = ARCHS[arch]
    return ViTConfig(width, depth, heads, ffn, num_register_tokens, interpolation=interpolation)


@flax.struct.dataclass
class ViTOutput:
    """Final-norm outputs, float32: CLS (B, D), patches (B, h, w, D), registers (B, R, D)."""

    cls_token: jax.Array
    patch_tokens: jax.Array
    register_tokens: jax.Array


class PatchEmbed(nn.Module):
    """The official stride-p p x p convolution, computed as one matmul over the flattened patches
    (a reshape and a transpose; the GPU runs it faster than cuDNN's convolution). Its parameters
    are the convolution's: kernel (p, p, C, D) and bias (D,)."""

    embed_dim: int
    patch_size: int
    dtype: Any
    use_bias: bool = True

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        p = self.patch_size
        batch, height, width, channels = images.shape
        patches = images.reshape(batch, height // p, p, width // p, p, channels).transpose(0, 1, 3, 2, 4, 5)
        x = nn.DenseGeneral(self.embed_dim, axis=(-3, -2, -1), use_bias=self.use_bias, dtype=self.dtype, name="proj")(patches)
        return x.reshape(batch, -1, self.embed_dim)


# Above this many bytes of attention scores per call, the XLA path computes attention in query
# chunks (cuDNN's fused kernel never materialises them; XLA's plain path would).
ATTENTION_SCORES_BUDGET = 2 << 30


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Softmax attention on (B, T, N, H) inputs, in query chunks when the scores would be big."""
    batch, tokens, heads, _ = q.shape
    chunk = max(1, ATTENTION_SCORES_BUDGET // (batch * heads * tokens * 4))
    if chunk >= tokens:
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")
    chunks = -(-tokens // chunk)
    padded = jnp.pad(q, ((0, 0), (0, chunks * chunk - tokens), (0, 0), (0, 0)))
    blocks = jnp.moveaxis(padded.reshape(batch, chunks, chunk, *q.shape[2:]), 1, 0)
    out = jax.lax.map(lambda qb: jax.nn.dot_product_attention(qb, k, v, implementation="xla"), blocks)
    return jnp.moveaxis(out, 0, 1).reshape(batch, chunks * chunk, *q.shape[2:])[:, :tokens]


def _cudnn_padded(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    batch, tokens = q.shape[:2]
    padded = -(-tokens // 64) * 64
    if padded == tokens:
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
    pad = lambda x: jnp.pad(x, ((0, 0), (0, padded - tokens), (0, 0), (0, 0)))
    lengths = jnp.full((batch,), tokens, jnp.int32)
    out = jax.nn.dot_product_attention(
        pad(q), pad(k), pad(v), query_seq_lengths=lengths, key_value_seq_lengths=lengths, implementation="cudnn"
    )
    return out[:, :tokens]


@jax.custom_vjp
def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """cuDNN flash attention on (B, T, N, H) inputs. Its forward takes any length, its backward
    only multiples of 64: under differentiation the tokens are padded and the padding masked out
    through sequence lengths, while a plain call (inference) skips the padding and its copies."""
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


def _cudnn_attention_fwd(q, k, v):
    return jax.vjp(_cudnn_padded, q, k, v)  # (output, the padded call's vjp as residual)


cudnn_attention.defvjp(_cudnn_attention_fwd, lambda vjp, g: vjp(g))


def default_attention(dtype: Any, head_dim: int) -> str:
    """The fastest attention for a compute dtype on this backend: cuDNN's flash attention for
    16-bit compute on a GPU, the fused FFI kernel for float32 on a GPU (head_dim 64, with the CUDA
    kernel library built), XLA otherwise."""
    if jax.default_backend() != "gpu":
        return "xla"
    if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    if head_dim == CUDA_HEAD_DIM and kernels.available("cuda"):
        return "fused"
    return "xla"


ATTENTION = {"xla": xla_attention, "cudnn": cudnn_attention, "fused": fused_attention}


def rope_tables(h: int, w: int, head_dim: int, base: float) -> tuple[jax.Array, jax.Array]:
    """DINOv3's RopePositionEmbedding at inference (normalize_coords="separate"): (sin, cos), each
    (h*w, head_dim), for patch centres at [-1, 1] in each axis."""
    coords = jnp.stack(jnp.meshgrid((jnp.arange(h) + 0.5) / h, (jnp.arange(w) + 0.5) / w, indexing="ij"), -1)
    coords = 2.0 * coords.reshape(h * w, 2) - 1.0
    periods = base ** (2 * jnp.arange(head_dim // 4, dtype=jnp.float32) / (head_dim // 2))
    angles = jnp.tile((2 * jnp.pi * coords[:, :, None] / periods).reshape(h * w, head_dim // 2), 2)
    return jnp.sin(angles), jnp.cos(angles)


def apply_rope(x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    """(B, T, N, H) with the last h*w tokens the patches: x cos + rotate_half(x) sin on those,
    in float32 (the prefix tokens pass unchanged)."""
    sin, cos = rope
    prefix = x.shape[1] - sin.shape[0]
    patches = x[:, prefix:].astype(jnp.float32)
    half = jnp.concatenate([-patches[..., patches.shape[-1] // 2 :], patches[..., : patches.shape[-1] // 2]], -1)
    rotated = patches * cos[None, :, None] + half * sin[None, :, None]
    return jnp.concatenate([x[:, :prefix], rotated.astype(x.dtype)], axis=1)


class Attention(nn.Module):
    num_heads: int
    dtype: Any
    implementation: str | None = None  # a key of ATTENTION; None: default_attention
    key_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        batch, tokens, width = x.shape
        dense = nn.Dense(3 * width, dtype=self.dtype, name="qkv")
        qkv = dense(x)
        if not self.key_bias:  # DINOv3's LinearKMaskedBias: the key third of the bias is multiplied by 0
            bias = dense.variables["params"]["bias"]
            qkv = qkv - (bias * (jnp.arange(3 * width) // width == 1)).astype(qkv.dtype)
        # Official layout of the fused projection: [q | k | v], each head-major.
        q, k, v = jnp.unstack(qkv.reshape(batch, tokens, 3, self.num_heads, width // self.num_heads), axis=2)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        implementation = self.implementation or default_attention(q.dtype, q.shape[-1])
        if implementation not in ATTENTION:
            raise ValueError(f"attention={implementation!r}: expected one of {sorted(ATTENTION)} or None")
        out = ATTENTION[implementation](q, k, v)
        return nn.Dense(width, dtype=self.dtype, name="proj")(out.reshape(batch, tokens, width))


class Mlp(nn.Module):
    hidden_dim: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(nn.gelu(h, approximate=False))


class SwiGLUFFN(nn.Module):
    """Official ``SwiGLUFFNFused``: w12 holds [gate | value] projections side by side."""

    hidden_dim: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gate, value = jnp.split(nn.Dense(2 * self.hidden_dim, dtype=self.dtype, name="w12")(x), 2, axis=-1)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="w3")(nn.silu(gate) * value)


class LayerScale(nn.Module):
    init_value: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gamma = self.param("gamma", nn.initializers.constant(self.init_value), (x.shape[-1],), jnp.float32)
        return x.astype(jnp.float32) * gamma


class Block(nn.Module):
    """Pre-norm transformer block; ``x`` is the float32 residual stream."""

    config: ViTConfig
    dtype: Any
    attention: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        c = self.config
        norm = lambda name: nn.LayerNorm(epsilon=c.norm_eps, dtype=self.dtype, name=name)
        scale = (lambda name: LayerScale(name=name)) if c.layer_scale else (lambda name: lambda y: y.astype(jnp.float32))
        ffn = SwiGLUFFN if c.ffn == "swiglu" else Mlp
        attn = Attention(c.num_heads, self.dtype, self.attention, c.key_bias, name="attn")
        x = x + scale("ls1")(attn(norm("norm1")(x), rope))
        return x + scale("ls2")(ffn(c.hidden_dim, self.dtype, name="mlp")(norm("norm2")(x)))


class DinoV2(nn.Module):
    """DINOv2 ViT.

    Attributes:
      config: architecture.
      dtype: compute dtype (parameters stay float32).
      remat: recompute each block in the backward pass (saves activation memory).
      matmul_precision: a ``jax_default_matmul_precision`` value for float32 compute; None means
        "float32" (true fp32; e.g. "TF32_TF32_F32_X3" trades a little accuracy for speed).
      attention: "cudnn", "fused" or "xla" attention; None: :func:`default_attention`.
    """

    config: ViTConfig
    dtype: Any = jnp.float32
    remat: bool = False
    matmul_precision: str | None = None
    attention: str | None = None

    def setup(self):
        c = self.config
        grid = c.pos_grid * c.pos_grid
        self.patch_embed = PatchEmbed(c.embed_dim, c.patch_size, self.dtype, c.patch_bias)
        self.cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, c.embed_dim))
        if not c.rope:
            self.pos_embed = self.param("pos_embed", nn.initializers.truncated_normal(0.02), (1, 1 + grid, c.embed_dim))
        # Used only where masks are given (iBOT-style masked inputs); kept for faithful export.
        self.mask_token = self.param("mask_token", nn.initializers.zeros, (1, c.embed_dim))
        if c.num_register_tokens:
            self.register_tokens = self.param(
                "register_tokens", nn.initializers.normal(1e-6), (1, c.num_register_tokens, c.embed_dim)
            )
        if c.norm_pre:
            self.norm_pre = nn.LayerNorm(epsilon=c.norm_eps, dtype=jnp.float32)
        block = nn.remat(Block) if self.remat else Block
        self.blocks = [block(c, self.dtype, self.attention) for _ in range(c.depth)]
        self.norm = nn.LayerNorm(epsilon=c.norm_eps, dtype=jnp.float32)

    def _precision(self):
        if jnp.dtype(self.dtype) != jnp.float32:
            return contextlib.nullcontext()
        return jax.default_matmul_precision(self.matmul_precision or "float32")

    def _grid(self, images: jax.Array) -> tuple[int, int]:
        p = self.config.patch_size
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected images of shape (B, H, W, 3), got {images.shape}")
        height, width = images.shape[1:3]
        if height % p or width % p:
            raise ValueError(
                f"image size {height}x{width} (shape {images.shape}) is not a multiple of the patch size {p}; "
                "resize explicitly first (fit3d_jax.images.resize_to_patch_multiple)"
            )
        return height // p, width // p

    def interpolated_pos_embed(self, h: int, w: int) -> jax.Array:
        """Position embeddings (1, 1 + h*w, D) for an h x w token grid, as the official model."""
        m = self.config.pos_grid
        if (h, w) == (m, m):
            return self.pos_embed
        offset, antialias = self.config.pos_embed_resize
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[0, 1:].reshape(m, m, -1)
        scale_factors = ((h + offset) / m, (w + offset) / m) if offset else None
        patch_pos = resize_bicubic(patch_pos, (h, w), scale_factors=scale_factors, antialias=antialias)
        return jnp.concatenate([cls_pos, patch_pos.reshape(1, h * w, -1)], axis=1)

    def _tokens(self, images: jax.Array, masks: jax.Array | None) -> jax.Array:
        """[CLS, registers, patches] + position embeddings, float32 (B, 1 + R + h*w, D)."""
        h, w = self._grid(images)
        batch = images.shape[0]
        x = self.patch_embed(images.astype(self.dtype)).astype(jnp.float32)
        if masks is not None:
            chex.assert_shape(masks, (batch, h, w))
            x = jnp.where(masks.reshape(batch, h * w, 1), self.mask_token[None], x)
        cls = jnp.broadcast_to(self.cls_token, (batch, 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1)
        if not self.config.rope:
            x = x + self.interpolated_pos_embed(h, w)
        if self.config.num_register_tokens:
            registers = jnp.broadcast_to(self.register_tokens, (batch, *self.register_tokens.shape[1:]))
            x = jnp.concatenate([x[:, :1], registers, x[:, 1:]], axis=1)
        return self.norm_pre(x) if self.config.norm_pre else x

    def _run_blocks(self, images: jax.Array, masks: jax.Array | None, keep: Sequence[int]) -> tuple[jax.Array, list]:
        x = self._tokens(images, masks)
        c = self.config
        rope = rope_tables(*self._grid(images), c.embed_dim // c.num_heads, c.rope_base) if c.rope else None
        kept = []
        for i, block in enumerate(self.blocks):
            x = block(x, rope)
            if i in keep:
                kept.append(x)
        return x, kept

    def _split(self, tokens: jax.Array, grid: tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(B, T, D) -> CLS (B, D), registers (B, R, D), patches (B, h, w, D)."""
        r = 1 + self.config.num_register_tokens
        return tokens[:, 0], tokens[:, 1:r], tokens[:, r:].reshape(tokens.shape[0], *grid, -1)

    def __call__(self, images: jax.Array, masks: jax.Array | None = None) -> ViTOutput:
        """images (B, H, W, 3), normalised; ``masks`` (B, h, w) bool replaces patches by mask_token."""
        grid = self._grid(images)
        with self._precision():
            x, _ = self._run_blocks(images, masks, keep=())
            cls, registers, patches = self._split(self.norm(x), grid)
        return ViTOutput(cls_token=cls, patch_tokens=patches, register_tokens=registers)

    def get_intermediate_layers(
        self,
        images: jax.Array,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Outputs of the last ``n`` blocks (or of the blocks indexed by ``n``), as the official method.

        Patch tokens are (B, h*w, D), or (B, h, w, D) with ``reshape`` (NHWC, where the official
        model returns NCHW). With ``return_class_token`` each entry is (patches, cls (B, D)).
        """
        depth = self.config.depth
        keep = list(range(depth - n, depth)) if isinstance(n, int) else sorted(n)
        if not keep or keep[0] < 0 or keep[-1] >= depth:
            raise ValueError(f"n={n!r} does not select blocks of a {depth}-block model")
        grid = self._grid(images)
        with self._precision():
            _, outputs = self._run_blocks(images, None, keep=keep)
            if norm:
                outputs = [self.norm(o) for o in outputs]
        results = []
        for out in outputs:
            cls, _, patches = self._split(out, grid)
            patches = patches if reshape else patches.reshape(out.shape[0], -1, out.shape[-1])
            results.append((patches, cls) if return_class_token else patches)
        return tuple(results)


def _probe_images(config: ViTConfig) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, config.patch_size, config.patch_size, 3), jnp.float32)


def init_params(config: ViTConfig, seed: int = 0) -> dict:
    """Random float32 parameters (tests, benchmarks); LayerScale starts at 1 as in torch hub."""
    images = jnp.zeros(_probe_images(config).shape, jnp.float32)
    return jax.jit(DinoV2(config).init)(jax.random.key(seed), images)["params"]


def param_shapes(config: ViTConfig) -> dict:
    """Parameter tree of ``config`` as jax.ShapeDtypeStruct leaves (no computation)."""
    return jax.eval_shape(DinoV2(config).init, jax.random.key(0), _probe_images(config))["params"]
