"""Linear segmentation probe on Pascal VOC 2012 (VOCdevkit folder; train_split 'trainaug' reads
SegmentationClassAug). The mmseg VOC pipeline: resize (2048, 512) x 0.5-2, crops 512, slide 512/341.

python -m fit3d_jax.main --config=configs/probe_voc.py --config.data.data_dir=/data/VOC --config.finetuned=...
"""

import common


def get_config():
    return common.probe_segmentation(dict(name="voc", data_dir="", train_split="train", test_split="val"))
