"""Linear probes on ScanNet++ in FiT3D's evaluation layout, as configs/prepare_scannetpp.py writes it
(probe_data=True) and as FiT3D's published evaluation data has it:

    <data_dir>/images/{training,validation}/*.JPG
    <data_dir>/annotations/{training,validation}/*.png     0 = unlabelled, 1..100 = top100.txt's classes
    <data_dir>/scannetpp_train.txt, scannetpp_val.txt      '<image> <depth>' lines; depth: uint16 mm PNGs

python -m fit3d_jax.main --config=configs/probe_scannetpp.py --config.data.data_dir=outputs/scannetpp/eval \
    --config.finetuned=outputs/finetune/checkpoints
python -m fit3d_jax.main --config=configs/probe_scannetpp.py:depth --config.data.data_dir=outputs/scannetpp/eval

Segmentation: 100 classes with mmseg's reduce_zero_label, the ADE20K protocol. Depth: 0.001-20 m, no
crop, the NYUv2 protocol's crops of 416x544. The paper (Tables 1 and 2, ViT-S): mIoU 30.19 -> 32.76,
RMSE 0.3742 -> 0.3361 with FiT3D.
"""

import common


def get_config(task: str = "segmentation"):
    if task == "depth":
        data = dict(name="scannetpp_depth", data_dir="", train_split="scannetpp_train.txt", test_split="scannetpp_val.txt",
                    min_depth=1e-3, max_depth=20.0)
        return common.probe_depth(data, crop=(416, 544))
    return common.probe_segmentation(dict(name="scannetpp", data_dir=""))
