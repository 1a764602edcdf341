"""Linear probes on ScanNet++ in FiT3D's evaluation layout (eval_data/scannetpp), as
configs/prepare_scannetpp.py writes it (probe_data=True) and as FiT3D's evaluation data has it:

    <data_dir>/images/{training,validation}/*.JPG
    <data_dir>/annotations/{training,validation}/*.png     0 = unlabelled, 1..100 = top100.txt's classes
    <data_dir>/scannetpp_train.txt, scannetpp_val.txt      '<image> <depth>' lines; depth: uint16 mm PNGs

python -m fit3d_jax.main --config=configs/probe_scannetpp.py --config.data.data_dir=outputs/scannetpp/eval \
    --config.finetuned=outputs/finetune/checkpoints
python -m fit3d_jax.main --config=configs/probe_scannetpp.py:depth --config.data.data_dir=outputs/scannetpp/eval

Segmentation: 100 classes, reduce_zero_label. Depth: 0.001-20 m, no evaluation crop, training crops
416x544, whole 876x584 frames at test.

The paper (Tables 9 and 10, DINOv2 -> FiT3D concat; Tables 1 and 2 give the same ViT-S figures):
    segmentation mIoU / mAcc / aAcc   ViT-S 30.19 / 40.84 / 80.25 -> 32.76 / 43.40 / 83.54
                                      ViT-B 32.72 / 42.99 / 82.05 -> 36.19 / 46.35 / 85.50
    depth RMSE / AbsRel               ViT-S 0.3742 / 0.2836 -> 0.3361 / 0.2401
                                      ViT-B 0.3439 / 0.2576 -> 0.3174 / 0.2324
"""

import common


def get_config(task: str = "segmentation"):
    if task == "depth":
        data = dict(name="scannetpp_depth", data_dir="", train_split="scannetpp_train.txt", test_split="scannetpp_val.txt",
                    min_depth=1e-3, max_depth=20.0)
        return common.probe_depth(data, crop=(416, 544))
    return common.probe_segmentation(dict(name="scannetpp", data_dir=""))
