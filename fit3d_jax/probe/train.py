"""Linear probing: train a head on frozen (assembled) features, then evaluate the test split.

A step runs each frozen model once and then every head (``make_train_step``), each a ``jax.jit``
over a mesh of all devices: the batch is sharded, head and backbone parameters are replicated, and
BatchNorm statistics are computed over the global batch (XLA inserts the reductions), as SyncBN
does. Each process prepares only its rows of the global batch.

Two input modes:
- live (the protocol): every step augments its images (host crops, finished on the device) and runs the backbones;
- cached (``cache_features``): every training image is embedded once, unaugmented, at its own
  size; steps then train the head on the stored tokens. Minutes instead of hours on a CPU; all
  training images must share one size.

Runs resume from ``<output_dir>/checkpoints``; the data order is a function of (seed, step).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import cv2
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from fit3d_jax import viz
from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import guard
from fit3d_jax.harness import mesh as harness_mesh
from fit3d_jax.harness.checkpoints import Checkpoints
from fit3d_jax.harness.loop import TrainLoop
from fit3d_jax.images import normalize
from fit3d_jax.models.dinov2 import FORWARD_COMPILER_OPTIONS
from fit3d_jax.prefetch import Prefetcher
from fit3d_jax.probe import augment, device_augment, fused_loss, inference
from fit3d_jax.probe.assembly import Backbones, models_for
from fit3d_jax.probe.datasets import SEGMENTATION, Dataset
from fit3d_jax.probe.heads import Placement
from fit3d_jax.probe.metrics import IGNORE_INDEX
from fit3d_jax.probe.protocol import Protocol
from fit3d_jax.probe.tasks import make_task


@dataclasses.dataclass(frozen=True)
class Schedule:
    """AdamW on mmcv's schedules with a linear warm-up, as FiT3D's configs set them. Segmentation:
    lr 1e-3, wd 1e-4, poly, warm-up 1500 (ratio 1e-6), 40k iterations, batch 16. Depth: lr 1e-4,
    wd 0.01, cosine to lr x 1e-8, warm-up 12.8k (ratio 1e-3), 38.4k iterations, clip 35, and
    ``momentum_config=dict(policy="OneCycle")``, which drives AdamW's beta1 0.95 -> 0.85 -> 0.95."""

    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    iterations: int = 40_000
    warmup_iterations: int = 1500
    warmup_ratio: float = 1e-6
    policy: str = "poly"  # poly | cosine
    power: float = 1.0  # poly
    min_lr: float = 0.0  # poly
    min_lr_ratio: float = 0.0  # cosine: the final rate over the initial one
    momentum: str = "constant"  # constant (beta1 0.9) | onecycle (mmcv's OneCycleMomentumUpdaterHook defaults)
    clip_norm: float = 0.0  # 0 = no clipping
    batch_size: int = 16  # global


@dataclasses.dataclass(frozen=True)
class Evaluation:
    mode: str = "slide"  # slide | whole
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    flip: bool = False  # average with the prediction of the mirrored input (FiT3D's depth test pipeline)
    max_images: int = 0  # 0 = the whole test split
    num_visualize: int = 8  # prediction-beside-ground-truth PNGs


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    schedule: Schedule = dataclasses.field(default_factory=Schedule)
    augment: augment.Augment = dataclasses.field(default_factory=augment.Augment)
    evaluation: Evaluation = dataclasses.field(default_factory=Evaluation)
    protocol: Protocol = dataclasses.field(default_factory=Protocol)
    cache_features: bool = False
    decoded_cache_gb: float = 0.0  # host memory for decoded training examples; 0 = read every time, -1 = automatic
    # With the device augmentation: the training set, padded once, stays on every device when it
    # takes at most this much (GB per device); steps then send only the draws. 0 = never.
    device_dataset_gb: float = 0.0
    # The segmentation loss resizes and takes the softmax in one FFI kernel (probe/fused_loss.py),
    # on CPUs and on GPUs with the CUDA library; XLA's loss elsewhere or when False.
    fused_loss: bool = True


class TrainState(train_state.TrainState):
    batch_stats: dict


@flax.struct.dataclass
class ProbeState:
    """Every head's state, and the first step whose loss or gradients (of any head) were not finite."""

    heads: dict  # {head name: TrainState}
    nonfinite: guard.NonFinite

    @property
    def step(self) -> jax.Array:
        return next(iter(self.heads.values())).step


@dataclasses.dataclass(frozen=True)
class Head:
    """One probe of a run: its assembly, learning rate and initialisation seed. Every head of a run
    trains on the same batches (the data order follows the run's seed) and one backbone pass."""

    name: str
    assembly: str
    learning_rate: float
    seed: int


GUARDED = ("loss", "gradients")


def guarded(heads: list[Head]) -> tuple[str, ...]:
    """The non-finite record's quantities: a loss and "all gradients finite" per head."""
    if len(heads) == 1:
        return GUARDED
    return tuple(f"{h.name}/{q}" for h in heads for q in GUARDED)


def half_cosine(factor: jax.Array) -> jax.Array:
    """(cos(pi f) + 1) / 2, mmcv's annealing_cos factor, as cos(pi f / 2)^2: float32 keeps its
    relative precision near f = 1, where the sum cancels."""
    return jnp.cos(jnp.pi * factor / 2) ** 2


def learning_rate(s: Schedule) -> optax.Schedule:
    """mmcv's LrUpdaterHook at iteration ``step`` (0-based): the policy's rate, times the linear
    warm-up factor while warming up."""
    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        if s.policy == "cosine":  # annealing_cos(base, base * min_lr_ratio, step / iterations)
            end = s.learning_rate * s.min_lr_ratio
            regular = end + (s.learning_rate - end) * half_cosine(step / s.iterations)
        else:
            regular = (s.learning_rate - s.min_lr) * (1 - step / s.iterations) ** s.power + s.min_lr
        # mmcv: regular * (1 - k), k = (1 - step / warmup) * (1 - ratio); written without the
        # cancellation of 1 - k, which float32 would make 1% wrong at step 0.
        warm = s.warmup_ratio + (1 - s.warmup_ratio) * step / max(s.warmup_iterations, 1)
        return jnp.where(step < s.warmup_iterations, regular * warm, regular)

    return schedule


def one_cycle_beta1(iterations: int, base: float = 0.85, peak: float = 0.95, pct_start: float = 0.3) -> optax.Schedule:
    """mmcv's OneCycleMomentumUpdaterHook (two phases, cosine) as AdamW's beta1 at iteration
    ``step``: ``peak`` -> ``base`` until iteration pct_start * iterations - 1, then back to ``peak``
    at iterations - 1."""
    turn = pct_start * iterations - 1
    cos = lambda start, end, f: end + (start - end) * half_cosine(f)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        return jnp.where(step <= turn, cos(peak, base, step / turn), cos(base, peak, (step - turn) / (iterations - 1 - turn)))

    return schedule


def optimizer(s: Schedule) -> optax.GradientTransformation:
    if s.momentum == "onecycle":  # beta1 as a schedule (Adam's bias correction uses the current beta1, as torch's)
        adamw = optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate(s), b1=one_cycle_beta1(s.iterations),
                                                      b2=0.999, eps=1e-8, weight_decay=s.weight_decay)
    else:
        adamw = optax.adamw(learning_rate(s), b1=0.9, b2=0.999, eps=1e-8, weight_decay=s.weight_decay)
    return optax.chain(optax.clip_by_global_norm(s.clip_norm), adamw) if s.clip_norm > 0 else adamw


def scale_for_test(image: np.ndarray, a: augment.Augment) -> np.ndarray:
    """The test-time resize: keep-ratio to ``scale`` for segmentation; (0, 0) = none."""
    if not any(a.scale):
        return image
    size = augment.keep_ratio_size(*image.shape[:2], a.scale)
    return cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR) if size != image.shape[:2] else image


class Batches:
    """Host batches of this process's rows for step ``s``: (inputs, targets) numpy arrays.

    Live inputs, augmentation on the device (``augment.on_device``): {field: (B, ...)}, the decoded
    images and targets padded to the batch's canvas (``device_augment.segmentation_arrays`` /
    ``depth_arrays``; with the training set resident on the devices, their indices instead) and the
    batch's draws (``segmentation_draw_inputs`` / ``depth_draw_inputs``), targets None: the step
    augments. On the host: the numpy
    reference's uint8 crops (B, H, W, 3) padded with zeros, their sizes (B, 2), colour draws (B, 6),
    and the padded targets; the step finishes them (``device_augment.finish_batch``). Cached inputs
    are {model: (tokens, CLS)}."""

    def __init__(self, dataset: Dataset, settings: ProbeSettings, seed: int, cache=None, workers: int = 8,
                 statistics: str = "imagenet"):
        self.split, self.settings, self.seed, self.cache = dataset.train, settings, seed, cache
        self.statistics = statistics  # the input normalisation (ViTConfig.input_statistics)
        self.task = dataset.task
        self.global_batch = settings.schedule.batch_size
        if self.global_batch % jax.process_count():
            raise ConfigError(f"config.schedule.batch_size={self.global_batch} is not a multiple of the {jax.process_count()} processes")
        self.local = self.global_batch // jax.process_count()
        self.first = jax.process_index() * self.local
        self.size = len(self.split) if cache is None else len(cache[1])
        if self.size < self.global_batch:
            raise ConfigError(f"config.data: {self.split.name} has {self.size} examples, fewer than config.schedule.batch_size="
                              f"{self.global_batch}")
        self.per_epoch = self.size // self.global_batch
        self.pool = concurrent.futures.ThreadPoolExecutor(workers)  # cv2 releases the GIL
        # Decoded examples, kept until the budget is spent (epochs revisit every example, so the
        # first ones to arrive are as good as any); then the rest are read from disk each time.
        budget = settings.decoded_cache_gb
        if budget == -1:  # a quarter of the machine's memory, at most 16 GiB
            budget = min(16.0, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4 / 2**30)
        self.decoded, self.decoded_bytes, self.budget = {}, 0, int(budget * 2**30)
        self.lock = threading.Lock()
        a = settings.augment
        self.on_device = a.on_device and cache is None
        self.shapes: list[tuple[int, int]] = []  # of every training image, once resident() put them on the devices
        if self.on_device and jax.process_count() > 1 and not any(a.canvas):
            raise ConfigError("config.augment.canvas=(0, 0) sizes each batch's canvas from this process's images, which "
                              "other processes do not see: with several processes, set it to the largest image size")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def resident(self) -> dict | None:
        """The whole training set padded to one canvas ({source, labels | depth}: (N, ...) host
        arrays) for the devices to keep, when the device augmentation runs and it fits
        ``device_dataset_gb``; from then on batches carry indices and draws, not images. Else None.

        A first pass reads the shapes, in chunks, and gives up as soon as the canvas so far makes
        the set too big (so a large dataset is not decoded whole to find that out); the second
        fills preallocated arrays (examples come from the decoded cache where it holds them)."""
        budget = self.settings.device_dataset_gb * 1e9
        if not (self.on_device and budget > 0):
            return None
        per_pixel = 3 + (1 if self.task == SEGMENTATION else 4)
        chunks = [range(i, min(i + 64, self.size)) for i in range(0, self.size, 64)]
        shapes: list[tuple[int, int]] = []
        for chunk in chunks:
            shapes += [e.image.shape[:2] for e in self.pool.map(self._read, chunk)]
            canvas = device_augment.canvas_for(shapes, self.settings.augment.canvas)
            if self.size * canvas[0] * canvas[1] * per_pixel > budget:
                print(f"probe: the training set padded to at least {canvas[0]}x{canvas[1]} takes over "
                      f"config.device_dataset_gb={self.settings.device_dataset_gb} GB: images travel with each batch")
                return None
        arrays = device_augment.segmentation_arrays if self.task == SEGMENTATION else device_augment.depth_arrays
        def padded(i: int) -> dict:
            example = self._read(i)
            return arrays(example.image, example.target, canvas, example.name)

        out = None
        for chunk in chunks:
            for i, row in zip(chunk, self.pool.map(padded, chunk)):
                if out is None:
                    out = {k: np.empty((self.size, *v.shape), v.dtype) for k, v in row.items()}
                for k, v in row.items():
                    out[k][i] = v
        self.shapes = shapes
        return out

    def indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        rows = order[position * self.global_batch : (position + 1) * self.global_batch]
        return rows[self.first : self.first + self.local]

    def _read(self, index: int):
        example = self.decoded.get(index)
        if example is None:
            example = self.split[index]
            size = example.image.nbytes + example.target.nbytes
            with self.lock:
                if index not in self.decoded and self.decoded_bytes + size <= self.budget:
                    self.decoded[index], self.decoded_bytes = example, self.decoded_bytes + size
        return example

    def _draws(self, step: int, shapes: np.ndarray):
        """The draws of this process's rows, of (H, W) = ``shapes`` (B, 2): rows first .. of the
        step's global stream, so they do not depend on how many processes share the batch."""
        rng, a = np.random.default_rng([self.seed, step, 1]), self.settings.augment
        draw = augment.segmentation_draws if self.task == SEGMENTATION else augment.depth_draws
        return draw(shapes, rng, a, skip=self.first)

    def _draw_inputs(self, step: int, shapes: np.ndarray) -> dict:
        """The device augmentation's draws for rows of (H, W) = ``shapes`` (B, 2), made as one batch."""
        if self.task == SEGMENTATION:
            return device_augment.segmentation_draw_inputs(shapes, self._draws(step, shapes), self.settings.augment)
        return device_augment.depth_draw_inputs(shapes, self._draws(step, shapes))

    def _reference_crop(self, draws, example):
        """The numpy reference's crop of one row with its draws, padded, with its size and colour draws."""
        a = self.settings.augment
        if self.task == SEGMENTATION:
            (crop, target), colour, fill = augment.segmentation_crop(example.image, example.target, draws, a), augment.NO_COLOUR, IGNORE_INDEX
        else:
            (crop, target), colour, fill = augment.depth_crop(example.image, example.target, draws, a), draws.colour, 0.0
        size = np.array(crop.shape[:2], np.int32)
        return (*augment.pad(crop, target, a.crop, fill), size, colour.astype(np.float32))

    def __call__(self, step: int):
        picked = self.indices(step)
        if self.cache is not None:
            outputs, targets = self.cache
            return {m: (tokens[picked].astype(np.float32), cls[picked]) for m, (tokens, cls) in outputs.items()}, targets[picked]
        if self.shapes:  # resident: the step gathers the images of these indices
            shapes = np.array([self.shapes[i] for i in picked])
            return self._draw_inputs(step, shapes) | {"index": picked.astype(np.int32)}, None
        examples = list(self.pool.map(lambda i: self._read(int(i)), picked))
        if self.on_device:
            shapes = np.array([e.image.shape[:2] for e in examples])
            canvas = device_augment.canvas_for(shapes.tolist(), self.settings.augment.canvas)
            arrays = device_augment.segmentation_arrays if self.task == SEGMENTATION else device_augment.depth_arrays
            rows = list(self.pool.map(lambda e: arrays(e.image, e.target, canvas, e.name), examples))
            return {k: np.stack([r[k] for r in rows]) for k in rows[0]} | self._draw_inputs(step, shapes), None
        draws = self._draws(step, np.array([e.image.shape[:2] for e in examples]))
        rows = list(self.pool.map(lambda k: self._reference_crop(draws.row(k), examples[k]), range(len(examples))))
        crops, targets, sizes, colours = (np.stack(column) for column in zip(*rows))
        return (crops, sizes, colours), targets


def embed_training_set(dataset: Dataset, backbones: Backbones, models: tuple[str, ...], backbone_params: dict, progress: bool):
    """Cached mode: ({model: (tokens float16 (N, h, w, C), CLS (N, C))}, targets (N, H, W)) of every
    training example at its own size, unaugmented; each head assembles its features from these."""
    split, patch = dataset.train, backbones.model.config.patch_size
    first = split[0]
    placement = Placement.for_size(*first.image.shape[:2], patch)
    extract = jax.jit(backbones.run, compiler_options=FORWARD_COMPILER_OPTIONS)  # one program per model, as in the step
    outputs, targets = {m: ([], []) for m in models}, []
    for i in tqdm(range(len(split)), desc="embedding training set", disable=not progress):
        example = split[i]
        if example.image.shape != first.image.shape:
            raise ConfigError(f"config.cache_features needs one image size: {example.name} is {example.image.shape[:2]}, "
                             f"{first.name} is {first.image.shape[:2]}")
        image = normalize(example.image, backbones.model.config.input_statistics)
        padded = placement.pad(jnp.asarray(image[None]))
        for name in models:
            t, c = extract(backbone_params[name], padded)
            outputs[name][0].append(np.asarray(t[0], np.float16))
            outputs[name][1].append(np.asarray(c[0]))
        targets.append(example.target)
    return {m: (np.stack(t), np.stack(c)) for m, (t, c) in outputs.items()}, np.stack(targets)


def make_train_step(heads: list[Head], tasks: list, backbones: list[Backbones], models: tuple[str, ...], placement: Placement,
                    mesh: Mesh, cached: bool, settings: ProbeSettings, resident: dict | None = None):
    """One step of every head: the frozen ``models`` run once (or their cached outputs arrive as
    inputs), then each head assembles its features, takes its loss and its AdamW update. Each model
    is its own jitted program, apart from the heads': XLA then compiles it the same whichever heads
    read it, so a head's results are bit-identical to its single-head run. ``resident``: the
    training set on the devices (``Batches.resident``, replicated), from which the augmentation
    gathers the batch's images by index."""
    replicated, batched = harness_mesh.replicated(mesh), harness_mesh.batched(mesh)
    statistics = backbones[0].model.config.input_statistics
    a, num_classes = settings.augment, tasks[0].dataset.num_classes

    def run(p, inputs):  # the pipeline's finish, then the model
        return backbones[0].run(p, placement.pad(device_augment.finish_batch(*inputs, a, statistics)))

    run_model = jax.jit(run, in_shardings=(replicated, batched), out_shardings=batched, compiler_options=FORWARD_COMPILER_OPTIONS)

    def augment_batch(inputs, resident):  # -> (crops, sizes, colour draws), targets
        if resident is not None:
            index = inputs.pop("index")
            inputs = inputs | {k: v[index] for k, v in resident.items()}
        if tasks[0].name == SEGMENTATION:
            crops, sizes, labels = device_augment.segmentation_batch(inputs, a, num_classes)
            return (crops, sizes, jnp.broadcast_to(jnp.asarray(augment.NO_COLOUR, jnp.float32), (crops.shape[0], 6))), labels
        crops, sizes, colour, depth = device_augment.depth_batch(inputs, a)
        return (crops, sizes, colour), depth

    augment_jit = jax.jit(augment_batch, in_shardings=(batched, replicated), out_shardings=batched)
    single, names = len(tasks) == 1, guarded(heads)

    def head_step(task, assembly: Backbones, state: TrainState, outputs, targets):
        tokens, cls = assembly.assemble(outputs)

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            return task.training_loss(variables, tokens, cls, placement, targets, state.step)

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics, {"loss": loss, "gradients": guard.all_finite(grads)}

    def heads_step(state: ProbeState, outputs, targets):
        new_heads, metrics, watched = {}, {}, {}
        for head, task, assembly in zip(heads, tasks, backbones):  # state.heads is a pytree: its keys come back sorted
            new_heads[head.name], m, w = head_step(task, assembly, state.heads[head.name], outputs, targets)
            prefix = "" if single else f"{head.name}/"
            metrics |= {prefix + k: v for k, v in m.items()}
            watched |= {prefix + k: v for k, v in w.items()}
        return ProbeState(new_heads, state.nonfinite.record(state.step + 1, watched, names)), metrics

    jitted = jax.jit(heads_step, in_shardings=(replicated, batched, batched), out_shardings=(replicated, replicated), donate_argnums=0)

    def step(state: ProbeState, backbone_params, inputs, targets):
        if targets is None:  # the augmentation runs here, on the device
            inputs, targets = augment_jit(dict(inputs), resident)
        outputs = inputs if cached else {m: run_model(backbone_params[m], inputs) for m in models}
        return jitted(state, outputs, targets)

    return step


def train_heads(dataset: Dataset, heads: list[tuple[Head, Backbones]], backbone_params: dict, settings: ProbeSettings,
                output_dir: Path, *, seed: int = 0, log_every: int = 50, checkpoint_every: int = 2000, progress: bool = True,
                identity: dict | None = None):
    """Trains every head on the same batches in one loop (resuming where checkpoints of the same
    run exist: ``identity`` adds what the caller knows of the run, e.g. the data and weights);
    ``seed`` orders the data, each head's own seed initialises it. Returns ({name: task},
    {name: final TrainState}, summary)."""
    s = settings.schedule
    mesh = harness_mesh.data_mesh()
    harness_mesh.per_device(s.batch_size, mesh, "config.schedule.batch_size")
    specs, assemblies = [h for h, _ in heads], [b for _, b in heads]
    if len({h.name for h in specs}) != len(specs):
        raise ValueError(f"head names repeat: {[h.name for h in specs]}")
    fused = settings.fused_loss and dataset.task == SEGMENTATION
    if fused and not fused_loss.available():
        print(f"probe: no fused-loss kernel for {jax.default_backend()} (GPUs: python -m fit3d_jax.kernels build --cuda); using XLA's loss")
        fused = False
    tasks = [make_task(dataset, b, settings.protocol, mesh if fused else None) for b in assemblies]
    models = models_for([b.assembly for b in assemblies])
    patch = assemblies[0].model.config.patch_size
    output_dir = Path(output_dir)

    cache = embed_training_set(dataset, assemblies[0], models, backbone_params, progress) if settings.cache_features else None
    input_size = cache[1].shape[1:3] if cache is not None else settings.augment.crop
    placement = Placement.for_size(*input_size, patch)
    grid = (placement.padded_height // patch, placement.padded_width // patch)
    states = {}
    for spec, task, b in zip(specs, tasks, assemblies):
        example_tokens = jnp.zeros((1, *grid, b.feature_dim), jnp.float32)
        example_cls = jnp.zeros((1, b.cls_dim), jnp.float32)
        variables = task.head.init(jax.random.key(spec.seed), example_tokens, example_cls, placement, train=False)
        states[spec.name] = TrainState.create(apply_fn=task.head.apply, params=variables["params"],
                                              tx=optimizer(dataclasses.replace(s, learning_rate=spec.learning_rate)),
                                              batch_stats=variables.get("batch_stats", {}))
    state = ProbeState(states, guard.NonFinite.none())
    recorded = json.loads(json.dumps(dataclasses.asdict(settings), default=str))
    del recorded["schedule"]["iterations"], recorded["schedule"]["learning_rate"], recorded["evaluation"]  # may be extended, evaluated anew
    run = {"stage": "probe", "task": tasks[0].name, "dataset": dataset.name, "train_examples": len(dataset.train),
           "heads": [dataclasses.asdict(h) for h in specs], "settings": recorded, "seed": seed} | (identity or {})
    checkpoints = Checkpoints(output_dir / "checkpoints", run)
    found = checkpoints.restore_latest(lambda step: checkpoints.restore(step, state=ocp.args.StandardRestore(state))["state"])
    if found is not None:
        state = found[1]
        print(f"probe: resuming from step {int(state.step)}")
    state = jax.device_put(state, harness_mesh.replicated(mesh))
    # Cached mode never runs the backbones in the step: do not hand it their parameters.
    step_backbone_params = jax.device_put(backbone_params if cache is None else {}, harness_mesh.replicated(mesh))
    names = guarded(specs)
    batches = Batches(dataset, settings, seed, cache, statistics=assemblies[0].model.config.input_statistics)
    resident = batches.resident()
    if resident is not None:
        resident = jax.device_put(resident, harness_mesh.replicated(mesh))
    train_step = make_train_step(specs, tasks, assemblies, models, placement, mesh, cache is not None, settings, resident)
    start = int(state.step)

    def placed(step: int):  # on the prefetch threads: the host-to-device copies overlap the steps
        inputs, targets = batches(step)
        inputs = jax.tree.map(lambda a: harness_mesh.global_batch(a, mesh, s.batch_size), inputs)
        return inputs, None if targets is None else harness_mesh.global_batch(targets, mesh, s.batch_size)

    prefetch = Prefetcher(placed, start, s.iterations, depth=4)
    rates = {spec.name: learning_rate(dataclasses.replace(s, learning_rate=spec.learning_rate)) for spec in specs}

    def logged_metrics(metrics, step):
        if len(specs) == 1:
            return metrics | {"learning_rate": rates[specs[0].name](step)}
        return metrics | {f"{name}/learning_rate": rate(step) for name, rate in rates.items()}

    wall = time.perf_counter()
    try:
        with TrainLoop(f"probe {tasks[0].name}", output_dir, total=s.iterations, start=start, log_every=log_every,
                       checkpoint_every=checkpoint_every, progress=progress, guarded=names) as loop:
            for step in range(start, s.iterations):
                with loop.timed("data"):
                    inputs, targets = prefetch.next()
                state, metrics = train_step(state, step_backbone_params, inputs, targets)
                loop.step_done(step + 1, state.nonfinite, lambda m=metrics, k=step: logged_metrics(m, k),
                               save=lambda k=step + 1, st=state: checkpoints.save(k, state=ocp.args.StandardSave(st)))
            loop.check(state.nonfinite)
            logged, split = loop.logged, loop.time_split()
    finally:
        prefetch.close()
        batches.close()
        checkpoints.close()
    summary = {"iterations": s.iterations, "train_seconds_this_run": time.perf_counter() - wall, "time_split_seconds": split}
    for spec in specs:
        prefix = "" if len(specs) == 1 else f"{spec.name}/"
        summary |= {f"{prefix}first_logged_loss": logged[0][f"{prefix}loss"] if logged else None,
                    f"{prefix}last_logged_loss": logged[-1][f"{prefix}loss"] if logged else None}
    return {h.name: t for h, t in zip(specs, tasks)}, state.heads, summary


def train(dataset: Dataset, backbones: Backbones, backbone_params: dict, settings: ProbeSettings, output_dir: Path, *,
          seed: int = 0, **kwargs):
    """One head (the run's assembly, learning rate and seed); returns (task, final TrainState, summary)."""
    head = Head(backbones.assembly, backbones.assembly, settings.schedule.learning_rate, seed)
    tasks, states, summary = train_heads(dataset, [(head, backbones)], backbone_params, settings, output_dir, seed=seed, **kwargs)
    return tasks[head.name], states[head.name], summary


def _colour_target(task, target: np.ndarray, dataset: Dataset) -> np.ndarray:
    if task.name == SEGMENTATION:
        colours = np.concatenate([viz.palette(max(dataset.num_classes, 1)), np.zeros((256 - dataset.num_classes, 3), np.uint8)])
        return colours[np.clip(target, 0, 255).astype(np.int64)]
    scaled = np.clip(target / dataset.max_depth * 255, 0, 255).astype(np.uint8)
    coloured = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
    return np.where((target > 0)[..., None], coloured, 0).astype(np.uint8)


def evaluate_heads(heads: list[tuple[object, Backbones, TrainState, Path]], dataset: Dataset, backbone_params: dict,
                   settings: ProbeSettings, progress: bool = True) -> list[dict]:
    """Metrics over the test split for each head (task, assembly, state, output folder), the frozen
    models run once per image for all of them (this process takes every process_count-th image; the
    sums are gathered), and PNGs image | prediction | ground truth for the first images, per head."""
    ev = settings.evaluation
    if ev.mode not in ("slide", "whole"):
        raise ValueError(f"evaluation mode {ev.mode!r} is not 'slide' or 'whole'")
    tasks, assemblies, states, folders = zip(*heads)
    task, model_config = tasks[0], assemblies[0].model.config
    predictor = inference.DensePredictor(list(assemblies), [t.head for t in tasks], model_config.patch_size, flip=ev.flip)
    variables = [{"params": st.params, "batch_stats": st.batch_stats} for st in states]
    reduce = jax.jit(task.reduce)
    add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
    total = len(dataset.test) if not ev.max_images else min(ev.max_images, len(dataset.test))
    mine = range(jax.process_index(), total, jax.process_count())
    crop, stride = (tuple(ev.crop), tuple(ev.stride)) if ev.mode == "slide" else (None, None)

    def load(i: int):
        example = dataset.test[i]
        image = scale_for_test(example.image, settings.augment)  # uint8: the predictor normalises on the device
        prepared = inference.prepare(image, example.target.shape, crop, stride)
        bucket = (prepared.rows.shape[0], prepared.cols.shape[0])
        valid = dataset.eval_crop(*example.target.shape) if dataset.eval_crop else np.ones(example.target.shape, bool)
        return example, prepared, inference.pad_to(example.target, bucket, task.pad_target()), inference.pad_to(valid, bucket, False)

    sums = [task.empty_sums() for _ in heads]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for n, (example, prepared, target, valid) in enumerate(tqdm(pool.map(load, mine), total=len(mine), desc="evaluate",
                                                                       disable=not progress)):
            outs = predictor.predict_all(backbone_params, variables, prepared)
            sums = [add(total_sums, reduce(out, target, valid)) for total_sums, out in zip(sums, outs)]
            if n < ev.num_visualize:
                h, w = prepared.label_size
                for out, folder in zip(outs, folders):
                    out = np.asarray(out)[:h, :w]
                    shown = np.argmax(out, -1) if task.name == SEGMENTATION else out[..., 0]
                    panel = viz.side_by_side([example.image, _colour_target(task, shown, dataset),
                                              _colour_target(task, example.target, dataset)])
                    viz.save_png(Path(folder) / "predictions" / f"{n * jax.process_count() + jax.process_index():04d}.png", panel)
    if jax.process_count() > 1:
        sums = [jax.tree.map(lambda x: np.sum(multihost_utils.process_allgather(x), axis=0), s) for s in sums]
    return [task.summarize(s) | {"test_images": total} for s in sums]

