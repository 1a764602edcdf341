"""Linear segmentation probe on ADE20K (tfds scene_parse150; 'test' is the validation set).

python -m fit3d_jax.main --config=configs/probe_ade20k.py --config.finetuned=outputs/finetune/checkpoints \
    --config.data.data_dir=/data/tensorflow_datasets

Prepare the data once (needs TensorFlow for the build only):
tfds build scene_parse150 --file_format=array_record --data_dir=/data/tensorflow_datasets
"""

import common


def get_config():
    return common.probe_segmentation(dict(name="ade20k", data_dir="", train_split="train", test_split="test"))
