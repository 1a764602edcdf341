"""Linear depth probe on KITTI (Eigen split files as BTS / DINOv2 use them; KB crop 352x1216,
train crops 352x704, range 1e-3..80 m, Garg crop at evaluation).

python -m fit3d_jax.main --config=configs/probe_kitti_depth.py --config.data.data_dir=/data/kitti \
    --config.data.train_split=splits/eigen_train.txt --config.data.test_split=splits/eigen_test.txt \
    --config.data.image_root=raw --config.data.depth_root=depth --config.finetuned=...
"""

import common


def get_config():
    data = dict(name="kitti", data_dir="", train_split="eigen_train_files_with_gt.txt",
                test_split="eigen_test_files_with_gt.txt", image_root="", depth_root="", min_depth=1e-3, max_depth=80.0)
    return common.probe_depth(data, crop=(352, 704), brightness=(0.9, 1.1))
