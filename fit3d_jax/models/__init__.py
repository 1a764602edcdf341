"""2D backbones: the DINOv2 ViT (``dinov2``) and PyTorch-exact bicubic resampling (``resample``)."""

from fit3d_jax.models.dinov2 import ARCHS, DinoV2, ViTConfig, ViTOutput, init_params, param_shapes, vit_config

__all__ = ["ARCHS", "DinoV2", "ViTConfig", "ViTOutput", "init_params", "param_shapes", "vit_config"]
