"""Linear segmentation probe on Pascal VOC 2012 (FiT3D's eval_data/VOC2012: the VOCtrainval tar's
VOC2012 folder, or a folder holding VOCdevkit/VOC2012):

    JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette indices, 255 = boundary, no reduction),
    ImageSets/Segmentation/{train,val}.txt        (1464 / 1449 images; 'trainaug' reads SegmentationClassAug)

python -m fit3d_jax.main --config=configs/probe_voc.py --config.data.data_dir=/data/VOC2012 --config.finetuned=...

The paper (Table 3, ViT-S only; the text gives the gain only): mIoU +1.2 with FiT3D.
"""

import common


def get_config():
    return common.probe_segmentation(dict(name="voc", data_dir="", train_split="train", test_split="val"))
