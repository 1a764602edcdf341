"""Linear segmentation probe on ADE20K as released (ADEChallengeData2016, FiT3D's eval_data layout):

    <data_dir>/images/{training,validation}/*.jpg
    <data_dir>/annotations/{training,validation}/*.png     0 = other (ignored), 1..150 = the classes

python -m fit3d_jax.main --config=configs/probe_ade20k.py --config.data.data_dir=/data/ADEChallengeData2016 \
    --config.finetuned=outputs/finetune/checkpoints

Or through tensorflow-datasets (scene_parse150, prepared once with TensorFlow:
tfds build scene_parse150 --file_format=array_record --data_dir=/data/tensorflow_datasets):
    --config.data.name=ade20k_tfds --config.data.data_dir=/data/tensorflow_datasets \
    --config.data.train_split=train --config.data.test_split=test      # tfds's test = ADE20K validation

The paper (Table 9, DINOv2 -> FiT3D concat; Table 3 gives the same ViT-S figures):
    mIoU / mAcc / aAcc   ViT-S 44.28 / 56.74 / 79.73 -> 45.93 / 58.71 / 81.05
                         ViT-B 47.16 / 59.11 / 80.79 -> 49.50 / 62.18 / 82.52
"""

import common


def get_config():
    return common.probe_segmentation(dict(name="ade20k", data_dir=""))
