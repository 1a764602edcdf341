"""Linear depth probe on NYUv2 (tfds nyu_depth_v2; range 1e-3..10 m, Eigen crop, train crops 416x544).

python -m fit3d_jax.main --config=configs/probe_nyu_depth.py --config.data.data_dir=/data/tensorflow_datasets \
    --config.finetuned=outputs/finetune/checkpoints
"""

import common


def get_config():
    data = dict(name="nyu_depth", data_dir="", train_split="train", test_split="validation", min_depth=1e-3, max_depth=10.0)
    return common.probe_depth(data, crop=(416, 544))
