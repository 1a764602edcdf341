"""Linear probes on NYUv2 in FiT3D's evaluation layouts: segmentation in eval_data/nyuv2, depth in
eval_data/nyu.

    segmentation: <data_dir>/images/{training,validation}/*.png, annotations/{training,validation}/*.png
                  (0 = unlabelled, 1..13 = bed books ceiling chair floor furniture objects painting
                  sofa table tv wall window)
    depth:        <data_dir>/nyu_train.txt, nyu_test.txt ('<rgb> <depth> <focal>', a leading '/'
                  dropped); depth: uint16 mm PNGs

python -m fit3d_jax.main --config=configs/probe_nyu.py --config.data.data_dir=/data/eval_data/nyuv2 \
    --config.finetuned=outputs/finetune/checkpoints
python -m fit3d_jax.main --config=configs/probe_nyu.py:depth --config.data.data_dir=/data/eval_data/nyu
python -m fit3d_jax.main --config=configs/probe_nyu.py:depth --config.data.name=nyu_depth_tfds \
    --config.data.data_dir=/data/tensorflow_datasets --config.data.test_split=validation   # tfds nyu_depth_v2

Depth: 0.001-10 m; training frames cropped to rows 45:472, columns 43:608 (NYUCrop), then crops of
416x544; the Eigen crop (45:471, 41:601) at evaluation.

The paper (Tables 9 and 10, DINOv2 -> FiT3D concat; Tables 1 and 2 give the same ViT-S figures):
    segmentation mIoU / mAcc / aAcc   ViT-S 65.55 / 76.88 / 82.43 -> 67.50 / 80.52 / 83.37
                                      ViT-B 68.45 / 80.56 / 84.03 -> 70.56 / 80.58 / 85.72
    depth RMSE / AbsRel               ViT-S 0.4423 / 0.1392 -> 0.4198 / 0.1300
                                      ViT-B 0.3986 / 0.1218 -> 0.3802 / 0.1171
"""

import common


def get_config(task: str = "segmentation"):
    if task == "depth":
        data = dict(name="nyu_depth", data_dir="", train_split="nyu_train.txt", test_split="nyu_test.txt",
                    min_depth=1e-3, max_depth=10.0)
        return common.probe_depth(data, crop=(416, 544))
    return common.probe_segmentation(dict(name="nyu", data_dir=""))
