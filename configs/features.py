"""DINOv2 patch features of a folder of images: image | PCA-RGB | K-means PNGs.

python -m fit3d_jax.main --config=configs/features.py [--config.image_dir=DIR] [--config.num_clusters=8]
"""

import ml_collections

import common


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "features"
    config.image_dir = ""  # '' = real photographs shipped with scikit-image
    config.output_dir = "outputs/features"
    config.short_side = 448  # resize so the short side is ~this (sides floored to multiples of 14); 0 = as is
    config.num_clusters = 6
    config.dtype = "float32"  # or bfloat16 (compute; parameters stay float32)
    config.seed = 0  # K-means seeding
    common.weights(config)
    return config
