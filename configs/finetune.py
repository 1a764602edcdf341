"""Stage II: fine-tune DINOv2 on features rendered from the lifted scenes (the authors' recipe).

python -m fit3d_jax.main --config=configs/finetune.py [--config.store=outputs/lift/store]

Runs data-parallel over every local device (set --config.distributed=True on multi-host slices,
with the usual JAX coordinator environment). Checkpoints hold the items `params` and
`model_config`, so the result converts to PyTorch with configs/convert_torch.py
(--config.checkpoint=<output_dir>/checkpoints); the job prints the exact command.
"""

import ml_collections

import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "finetune"
    c.store = "outputs/lift/store"  # written by the lift job
    common.weights(c)  # the model to fine-tune (the original)
    # The authors' recipe: AdamW, lr 1e-5, weight decay 1e-4, gradient norm clipped at 0.1, global batch 2,
    # one epoch over every training view, random horizontal flips (image and target together). clip_norm 0 = no clipping.
    c.recipe = ml_collections.ConfigDict(dict(learning_rate=1e-5, weight_decay=1e-4, clip_norm=0.1, batch_size=2, epochs=1.0,
                                              flip_probability=0.5))
    c.max_steps = 0  # 0 = the recipe's epochs
    c.dtype = "bfloat16"  # compute dtype of the ViT (parameters stay float32)
    # Gradients are summed across devices in this dtype ("" = the compute dtype: bfloat16 weight
    # gradients are bfloat16 values already, and it halves the all-reduce); "float32" sums exactly.
    c.grad_reduce_dtype = ""
    c.device_cache_gb = 16.0  # scenes kept on each device (least recently used evicted)
    common.run(c, output_dir="outputs/finetune", log_every=50, checkpoint_every=1000)
    # Original vs fine-tuned features, side by side: held-out views of the store's scenes, and
    # the images of compare_dir if given.
    c.compare_views = 4
    c.compare_dir = ""
    c.num_clusters = 6
    return c
