"""Linear depth probe on KITTI, FiT3D's eval_data/kitti layout (the BTS Eigen split):

    <data_dir>/kitti_eigen_train.txt, kitti_eigen_test.txt   '<image> <depth> [focal]' lines
    <data_dir>/input/<image>      RGB (e.g. 2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png)
    <data_dir>/gt_depth/<depth>   uint16 PNGs, metres x 256 (e.g. 2011_09_26_drive_0002_sync/proj_depth/groundtruth/...)

python -m fit3d_jax.main --config=configs/probe_kitti.py --config.data.data_dir=/data/eval_data/kitti \
    --config.finetuned=outputs/finetune/checkpoints

Frames KB-cropped to 352x1216, training crops 352x704, 0.001-80 m, the Garg crop of the KB-cropped
frame at evaluation.

The paper (Table 10, DINOv2 -> FiT3D concat; Table 3 gives the same ViT-S figures):
    RMSE / AbsRel   ViT-S 3.0322 / 0.0965 -> 2.9125 / 0.0891
                    ViT-B 2.9071 / 0.0950 -> 2.7923 / 0.0897
"""

import common


def get_config():
    data = dict(name="kitti", data_dir="", train_split="kitti_eigen_train.txt", test_split="kitti_eigen_test.txt",
                image_root="input", depth_root="gt_depth", min_depth=1e-3, max_depth=80.0)
    return common.probe_depth(data, crop=(352, 704), brightness=(0.9, 1.1))
