"""Linear probes on ScanNet in FiT3D's evaluation layout (eval_data/scannet):

    <data_dir>/images/{training,validation}/*.jpg
    <data_dir>/annotations/{training,validation}/*.png     0 = unlabelled, 1..40 = the NYU40 classes
    <data_dir>/scannet_train.txt, scannet_val.txt          '<image> <depth>' lines; depth: uint16 mm PNGs

python -m fit3d_jax.main --config=configs/probe_scannet.py --config.data.data_dir=/data/eval_data/scannet \
    --config.finetuned=outputs/finetune/checkpoints
python -m fit3d_jax.main --config=configs/probe_scannet.py:depth --config.data.data_dir=/data/eval_data/scannet

Segmentation: 40 classes, reduce_zero_label. Depth: 0.001-10 m, training crops 416x544, the Eigen
crop (rows 45:471, columns 41:601 of 640x480 frames) at evaluation.

The paper (ViT-S only; Tables 1 and 2, whose rows the paper's text gives only rounded): mIoU +1.2
with FiT3D; depth RMSE 0.31 (DINOv2) -> 0.29 (FiT3D).
"""

import common


def get_config(task: str = "segmentation"):
    if task == "depth":
        data = dict(name="scannet_depth", data_dir="", train_split="scannet_train.txt", test_split="scannet_val.txt",
                    min_depth=1e-3, max_depth=10.0)
        return common.probe_depth(data, crop=(416, 544))
    return common.probe_segmentation(dict(name="scannet", data_dir=""))
