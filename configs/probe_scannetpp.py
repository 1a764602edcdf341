"""Linear probes on ScanNet++ scenes in the lifting layout (frames with label_path / depth_path,
classes.json); training scenes and held-out scenes are folders of scenes (or scene lists).

python -m fit3d_jax.main --config=configs/probe_scannetpp.py --config.data.train=/data/scannetpp/train \
    --config.data.test=/data/scannetpp/val --config.finetuned=outputs/finetune/checkpoints
python -m fit3d_jax.main --config=configs/probe_scannetpp.py:depth --config.data.train=... --config.data.test=...

Segmentation follows the ADE20K protocol, depth the NYUv2 one with the paper's 20 m range.
"""

from fit3d_jax.probe import defaults


def get_config(task: str = "segmentation"):
    data = dict(name="scenes", train="", test="", min_depth=1e-3, max_depth=20.0, ignore_ids=(0,))
    return defaults.depth(data, crop=(416, 544)) if task == "depth" else defaults.segmentation(data)
