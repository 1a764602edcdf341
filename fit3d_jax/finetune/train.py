"""Stage II: fine-tune DINOv2 on rendered 3D-aware features (the authors' recipe).

Per step: a batch of random training views (one sample per device slot of the global batch);
every device renders the targets of its own samples (no gradients), the model sees the views'
images resized to a multiple of 14, and the loss is the L1 between its final-norm patch tokens and
the targets over unmasked tokens. AdamW (lr 1e-5, weight decay 1e-4), gradient norm clipped at
0.1. The step is jitted over a mesh of all devices: batch sharded, parameters replicated, so the
same code runs on one GPU, several, or several hosts (``jax.distributed``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from fit3d_jax.checkpointing import Checkpoints
from fit3d_jax.finetune import data, targets
from fit3d_jax.finetune.store import StoredScene
from fit3d_jax.images import normalize
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig
from fit3d_jax.prefetch import Prefetcher
from fit3d_jax.weights.checkpoints import CONFIG_ITEM, PARAMS_ITEM


@dataclasses.dataclass(frozen=True)
class Recipe:
    learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    clip_norm: float = 0.1
    batch_size: int = 2  # global
    epochs: float = 1.0
    flip_probability: float = 0.5


@struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: dict
    opt_state: optax.OptState


def optimizer(recipe: Recipe) -> optax.GradientTransformation:
    # Flattened: the clip and AdamW run over one vector, a handful of kernels rather than a few per
    # parameter tensor (~200 launches of the ~1000 in a ViT-S step; launching bounds the step).
    return optax.flatten(optax.chain(
        optax.clip_by_global_norm(recipe.clip_norm),
        optax.adamw(recipe.learning_rate, weight_decay=recipe.weight_decay),
    ))


def token_l1(tokens: jnp.ndarray, target: jnp.ndarray, weights: jnp.ndarray, total: jnp.ndarray | None = None) -> jnp.ndarray:
    """Mean |tokens - target| over channels and weighted tokens (weights: unmasked fraction).
    ``total`` replaces sum(weights) as the divisor (a device's share of a global batch)."""
    per_token = jnp.mean(jnp.abs(tokens - target), axis=-1)
    total = jnp.sum(weights) if total is None else total
    return jnp.sum(per_token * weights) / jnp.maximum(total, 1e-6)


def psum_gradients(grads, reduce_dtype, axis: str = "data"):
    """Sums per-device gradients over mesh axis ``axis`` in one all-reduce per dtype: the leaves
    are concatenated, so NCCL sees a few large buffers, not a call per tensor. Tensors of >= 65,536
    elements are summed in ``reduce_dtype``, smaller ones (norms, biases) in their own dtype."""
    leaves, treedef = jax.tree.flatten(grads)
    dtypes = [jnp.dtype(reduce_dtype) if g.size >= 1 << 16 else g.dtype for g in leaves]
    summed = [None] * len(leaves)
    for dtype in dict.fromkeys(dtypes):
        members = [i for i, d in enumerate(dtypes) if d == dtype]
        flat = jax.lax.psum(jnp.concatenate([leaves[i].astype(dtype).ravel() for i in members]), axis)
        offsets = np.cumsum([0] + [leaves[i].size for i in members])
        for i, lo, hi in zip(members, offsets[:-1], offsets[1:]):
            summed[i] = flat[lo:hi].reshape(leaves[i].shape).astype(leaves[i].dtype)
    return jax.tree.unflatten(treedef, summed)


def make_train_step(model: DinoV2, opt: optax.GradientTransformation, mesh: Mesh, reduce_dtype=jnp.float32):
    """The jitted step over ``mesh``: each device differentiates the loss of its own samples and
    the gradients are summed across devices explicitly (``psum_gradients``), in ``reduce_dtype``
    for the large tensors (as FSDP's ``reduce_dtype``): with bfloat16 compute the weight
    gradients are bfloat16 values already, and summing them in bfloat16 halves the all-reduce
    traffic. One device sums nothing. Images arrive as uint8 and are normalised here, on the
    device."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batched = NamedSharding(mesh, PartitionSpec("data"))

    def local_loss_and_grads(params, images, target, weights):
        # The global loss is sum(per-token L1 x weight) / sum(weight) over the whole batch, so
        # each device's share divides by the global weight sum.
        total = jax.lax.psum(jnp.sum(weights), "data")

        def loss_fn(params):
            return token_l1(model.apply({"params": params}, normalize(images)).patch_tokens, target, weights, total)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        if mesh.size > 1:
            grads = psum_gradients(grads, reduce_dtype)
        return jax.lax.psum(loss, "data"), grads

    # check_vma=False: the gradients of the replicated parameters stay per device until
    # ``psum_gradients`` sums them (with it on, JAX would insert its own float32 sum).
    loss_and_grads = jax.shard_map(
        local_loss_and_grads, mesh=mesh, in_specs=(PartitionSpec(), *[PartitionSpec("data")] * 3),
        out_specs=PartitionSpec(), check_vma=False,
    )

    def step(state: TrainState, images, target, weights):
        loss, grads = loss_and_grads(state.params, images, target, weights)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        new = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
        return new, {"loss": loss, "grad_norm": jnp.linalg.norm(jax.flatten_util.ravel_pytree(grads)[0])}

    return jax.jit(
        step,
        in_shardings=(replicated, batched, batched, batched),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def save_checkpoint(checkpoints: Checkpoints, state: TrainState, config: ViTConfig) -> None:
    """Items ``params`` and ``model_config`` (what ``fit3d_jax.weights.load_params`` and the
    convert_torch job read) plus the optimiser state."""
    checkpoints.save(int(state.step), **{
        PARAMS_ITEM: ocp.args.StandardSave(state.params),
        CONFIG_ITEM: ocp.args.JsonSave(config.to_dict()),
        "opt_state": ocp.args.StandardSave(state.opt_state),
    })


def restore_latest(checkpoints: Checkpoints, template: TrainState) -> TrainState | None:
    step = checkpoints.latest_step()
    if step is None:
        return None
    restored = checkpoints.restore(step, **{
        PARAMS_ITEM: ocp.args.StandardRestore(template.params),
        "opt_state": ocp.args.StandardRestore(template.opt_state),
    })
    return TrainState(jnp.int32(step), restored[PARAMS_ITEM], restored["opt_state"])


def finetune(
    scenes: list[StoredScene],
    params: dict,
    config: ViTConfig,
    recipe: Recipe,
    output_dir: Path,
    *,
    dtype=jnp.bfloat16,
    reduce_dtype=None,
    seed: int = 0,
    log_every: int = 50,
    checkpoint_every: int = 1000,
    device_cache_gb: float = 16.0,
    progress: bool = True,
    max_steps: int | None = None,
) -> tuple[TrainState, dict]:
    """Fine-tunes ``params``; resumes from ``output_dir/checkpoints`` when present. Returns the
    final state and a summary (losses, throughput, time split). Gradients are summed across
    devices in ``reduce_dtype`` (default: the compute ``dtype``; see ``make_train_step``)."""
    devices = jax.devices()
    mesh = Mesh(np.asarray(devices), ("data",))
    if recipe.batch_size % len(devices):
        raise ValueError(f"batch size {recipe.batch_size} is not a multiple of the {len(devices)} devices")
    per_device = recipe.batch_size // len(devices)
    if any(s.target_dim != config.embed_dim for s in scenes):
        raise ValueError(f"the store's targets have {scenes[0].target_dim} channels but the model has {config.embed_dim}")

    full, model_size, grid = data.image_size(scenes, config.patch_size)
    sampler = data.Sampler(scenes, recipe.batch_size, seed, recipe.flip_probability)
    total = max(1, int(recipe.epochs * sampler.steps_per_epoch))
    total = min(total, max_steps) if max_steps else total

    model = DinoV2(config, dtype=dtype)
    opt = optimizer(recipe)
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.tree.map(jnp.array, params)  # own copies: the step donates its state, never the caller's arrays
    state = jax.device_put(TrainState(jnp.int32(0), params, opt.init(params)), replicated)
    checkpoints = Checkpoints(Path(output_dir) / "checkpoints")
    resumed = restore_latest(checkpoints, state)
    if resumed is not None:
        state = jax.device_put(resumed, replicated)
        print(f"finetune: resuming from step {int(state.step)}")
    train_step = make_train_step(model, opt, mesh, reduce_dtype or dtype)

    local = jax.local_devices()
    caches = {d: targets.SceneCache(scenes, d, device_cache_gb * 1e9) for d in local}
    first_local = jax.process_index() * len(local) * per_device  # this process's slice of the batch
    start = int(state.step)
    make_batch = data.BatchMaker(scenes, sampler, model_size, grid)
    prefetch = Prefetcher(make_batch, start, total, depth=8)  # host preparation dominates on GPUs

    def device_shard(k: int, batch: data.HostBatch):
        """Targets, images and token weights of local device ``k``'s rows, on that device."""
        device = local[k]
        rows = range(first_local + k * per_device, first_local + (k + 1) * per_device)
        rendered = []
        for row in rows:
            sample = batch.samples[row]
            view = scenes[sample.scene].views[sample.view]
            viewmat, intrinsics = targets.view_camera(view)
            with jax.default_device(device):
                rendered.append(targets.render_target(
                    caches[device].get(sample.scene), viewmat, intrinsics, sample.flip, view.width, view.height, grid
                ))
        return (jnp.stack(rendered), jax.device_put(batch.images[rows.start : rows.stop], device),
                jax.device_put(batch.token_weights[rows.start : rows.stop], device))

    dispatchers = concurrent.futures.ThreadPoolExecutor(len(local), thread_name_prefix="dispatch")
    log_path = Path(output_dir) / "train_log.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a")
    bar = tqdm(total=total, initial=start, desc="finetune", unit="step", disable=not progress)
    timings = {"host_wait": 0.0, "render_dispatch": 0.0, "step": 0.0}
    losses = []
    wall = time.time()
    batched = NamedSharding(mesh, PartitionSpec("data"))
    global_array = lambda parts, shape: jax.make_array_from_single_device_arrays(shape, batched, parts)

    def next_inputs():
        """The next host batch, its targets rendered and its arrays sent, as global arrays."""
        t0 = time.time()
        batch = prefetch.next()
        t1 = time.time()
        # One dispatching thread per device: a render waits on its device's stream while
        # binning, and must not hold up the other devices' work.
        shards = list(dispatchers.map(lambda k: device_shard(k, batch), range(len(local))))
        shards_targets, shards_images, shards_weights = (list(parts) for parts in zip(*shards))
        b = recipe.batch_size
        inputs = (global_array(shards_images, (b, *model_size, 3)), global_array(shards_targets, (b, *grid, config.embed_dim)),
                  global_array(shards_weights, (b, *grid)))
        timings["host_wait"] += t1 - t0
        timings["render_dispatch"] += time.time() - t1
        return inputs

    try:
        ahead = next_inputs() if start < total else None
        for step in range(start, total):
            images, target, weights = ahead
            # The next step's renders are queued before this step's model step: the devices
            # render while the host launches the step, and the binning sync waits on the
            # previous step rather than leaving the devices idle.
            ahead = next_inputs() if step + 1 < total else None
            t2 = time.time()
            state, metrics = train_step(state, images, target, weights)
            it = step + 1
            if it % log_every == 0 or it == total:
                metrics = {k: float(v) for k, v in metrics.items()}  # synchronises
                losses.append(metrics["loss"])
                log.write(json.dumps(metrics | {"step": it}) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            timings["step"] += time.time() - t2
            bar.update(1)
            if it % checkpoint_every == 0 or it == total:
                save_checkpoint(checkpoints, state, config)
    finally:
        prefetch.close()
        make_batch.close()
        dispatchers.shutdown()
        bar.close()
        log.close()
        checkpoints.close()
    seconds = time.time() - wall
    done = total - start
    summary = {
        "steps": total,
        "steps_this_run": done,
        "views_per_second": done * recipe.batch_size / max(seconds, 1e-9),
        "seconds": seconds,
        "time_split_seconds": timings,
        "scene_transfers": {str(d): caches[d].transfers for d in local},
        "last_logged_loss": losses[-1] if losses else None,
        "first_logged_loss": losses[0] if losses else None,
    }
    return state, summary
