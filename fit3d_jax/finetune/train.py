"""Stage II: fine-tune DINOv2 on rendered 3D-aware features (the authors' recipe).

Per step: a batch of random training views (one sample per device slot of the global batch);
every device renders the targets of its own samples (no gradients), the model sees the views'
images resized to a multiple of the patch size, and the loss is the L1 between its final-norm patch tokens and
the targets over unmasked tokens. AdamW (lr 1e-5, weight decay 1e-4), gradient norm clipped at
0.1. The step is jitted over a mesh of all devices: batch sharded, parameters replicated, so the
same code runs on one GPU, several, or several hosts (``jax.distributed``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from pathlib import Path

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state
from jax.sharding import Mesh, PartitionSpec

from fit3d_jax.errors import ConfigError
from fit3d_jax.finetune import data, targets
from fit3d_jax.finetune.store import StoredScene
from fit3d_jax.harness import guard
from fit3d_jax.harness import mesh as harness_mesh
from fit3d_jax.harness.checkpoints import Checkpoints
from fit3d_jax.harness.loop import TrainLoop
from fit3d_jax.images import normalize
from fit3d_jax.models.dinov2 import DinoV2, ViTConfig
from fit3d_jax.prefetch import Prefetcher
from fit3d_jax.weights.checkpoints import CONFIG_ITEM, PARAMS_ITEM


@dataclasses.dataclass(frozen=True)
class Recipe:
    learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    clip_norm: float = 0.1  # 0 = no clipping
    batch_size: int = 2  # global
    epochs: float = 1.0
    flip_probability: float = 0.5


class TrainState(train_state.TrainState):
    nonfinite: guard.NonFinite  # the first step whose loss or gradients were not finite


GUARDED = ("loss", "gradients")


def optimizer(recipe: Recipe) -> optax.GradientTransformation:
    # Flattened: the clip and AdamW run over one vector, a handful of kernels rather than a few per
    # parameter tensor (~200 launches of the ~1000 in a ViT-S step; launching bounds the step).
    # clip_norm 0 means no clipping, as in the probes (clipping to norm 0 would freeze the model).
    clip = [optax.clip_by_global_norm(recipe.clip_norm)] if recipe.clip_norm > 0 else []
    return optax.flatten(optax.chain(*clip, optax.adamw(recipe.learning_rate, weight_decay=recipe.weight_decay)))


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


def make_train_step(model: DinoV2, mesh: Mesh, reduce_dtype=jnp.float32):
    """The jitted step over ``mesh``: each device differentiates the loss of its own samples and
    the gradients are summed across devices explicitly (``psum_gradients``), in ``reduce_dtype``
    for the large tensors (as FSDP's ``reduce_dtype``): with bfloat16 compute the weight
    gradients are bfloat16 values already, and summing them in bfloat16 halves the all-reduce
    traffic. One device sums nothing. Images arrive as uint8 and are normalised here, on the
    device."""
    replicated, batched = harness_mesh.replicated(mesh), harness_mesh.batched(mesh)

    def local_loss_and_grads(params, images, target, weights):
        # The global loss is sum(per-token L1 x weight) / sum(weight) over the whole batch, so
        # each device's share divides by the global weight sum.
        total = jax.lax.psum(jnp.sum(weights), "data")

        def loss_fn(params):
            return token_l1(model.apply({"params": params}, normalize(images, model.config.input_statistics)).patch_tokens, target, weights, total)

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
        flat = jax.flatten_util.ravel_pytree(grads)[0]  # one vector: a few kernels, not a few per tensor
        watched = {"loss": loss, "gradients": guard.all_finite(flat)}
        new = state.apply_gradients(grads=grads, nonfinite=state.nonfinite.record(state.step + 1, watched, GUARDED))
        return new, {"loss": loss, "grad_norm": jnp.linalg.norm(flat)}

    return jax.jit(
        step,
        in_shardings=(replicated, batched, batched, batched),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def initial_state(model: DinoV2, params: dict, recipe: Recipe) -> TrainState:
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer(recipe), nonfinite=guard.NonFinite.none())


def save_checkpoint(checkpoints: Checkpoints, state: TrainState, config: ViTConfig) -> None:
    """Items ``params`` and ``model_config`` (what ``fit3d_jax.weights.load_params`` and the
    convert_torch job read) plus the optimiser state."""
    checkpoints.save(int(state.step), **{
        PARAMS_ITEM: ocp.args.StandardSave(state.params),
        CONFIG_ITEM: ocp.args.JsonSave(config.to_dict()),
        "opt_state": ocp.args.StandardSave(state.opt_state),
    })


def restore(checkpoints: Checkpoints, template: TrainState) -> TrainState | None:
    def read(step: int) -> TrainState:
        restored = checkpoints.restore(step, **{
            PARAMS_ITEM: ocp.args.StandardRestore(template.params),
            "opt_state": ocp.args.StandardRestore(template.opt_state),
        })
        return template.replace(step=jnp.int32(step), params=restored[PARAMS_ITEM], opt_state=restored["opt_state"])

    found = checkpoints.restore_latest(read)
    return None if found is None else found[1]


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
    identity: dict | None = None,
    render_backend: str = "auto",
) -> tuple[TrainState, dict]:
    """Fine-tunes ``params``; resumes from ``output_dir/checkpoints`` when they hold this run
    (``identity`` adds what the caller knows of it: the store, the weights). Returns the final
    state and a summary (losses, throughput, time split). Gradients are summed across devices in
    ``reduce_dtype`` (default: the compute ``dtype``; see ``make_train_step``). ``render_backend``
    is the targets' rasterizer backend (``rasterize``'s ``backend``)."""
    mesh = harness_mesh.data_mesh()
    per_device = harness_mesh.per_device(recipe.batch_size, mesh, "config.recipe.batch_size")
    if any(s.target_dim != config.embed_dim for s in scenes):
        raise ConfigError(f"the store's targets have {scenes[0].target_dim} channels but the model (config.weights) has "
                          f"{config.embed_dim}: lift with the same model")

    full, model_size, grid = data.image_size(scenes, config.patch_size)
    sampler = data.Sampler(scenes, recipe.batch_size, seed, recipe.flip_probability)
    total = max(1, int(recipe.epochs * sampler.steps_per_epoch))
    total = min(total, max_steps) if max_steps else total

    model = DinoV2(config, dtype=dtype)
    replicated = harness_mesh.replicated(mesh)
    params = jax.tree.map(jnp.array, params)  # own copies: the step donates its state, never the caller's arrays
    state = initial_state(model, params, recipe)
    # The run's length (epochs, max_steps) is not part of its identity: a run may be extended.
    run = {"stage": "finetune", "recipe": {k: v for k, v in dataclasses.asdict(recipe).items() if k != "epochs"},
           "model": config.to_dict(), "seed": seed, "dtype": jnp.dtype(dtype).name} | (identity or {})
    checkpoints = Checkpoints(Path(output_dir) / "checkpoints", run)
    resumed = restore(checkpoints, state)
    if resumed is not None:
        state = resumed
        print(f"finetune: resuming from step {int(state.step)}")
    state = jax.device_put(state, replicated)
    train_step = make_train_step(model, mesh, reduce_dtype or dtype)

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
        with jax.default_device(device):
            shard = targets.render_samples(caches[device], [batch.samples[row] for row in rows], full, grid, render_backend)
        return (shard, jax.device_put(batch.images[rows.start : rows.stop], device),
                jax.device_put(batch.token_weights[rows.start : rows.stop], device))

    dispatchers = concurrent.futures.ThreadPoolExecutor(len(local), thread_name_prefix="dispatch")
    batched = harness_mesh.batched(mesh)
    global_array = lambda parts, shape: jax.make_array_from_single_device_arrays(shape, batched, parts)

    def next_inputs(loop: TrainLoop):
        """The next host batch, its targets rendered and its arrays sent, as global arrays."""
        with loop.timed("host_wait"):
            batch = prefetch.next()
        with loop.timed("render_dispatch"):
            # One dispatching thread per device: a render waits on its device's stream while
            # binning, and must not hold up the other devices' work.
            shards = list(dispatchers.map(lambda k: device_shard(k, batch), range(len(local))))
            shards_targets, shards_images, shards_weights = (list(parts) for parts in zip(*shards, strict=True))
            b = recipe.batch_size
            return (global_array(shards_images, (b, *model_size, 3)), global_array(shards_targets, (b, *grid, config.embed_dim)),
                    global_array(shards_weights, (b, *grid)))

    wall = time.perf_counter()
    try:
        with TrainLoop("finetune", Path(output_dir), total=total, start=start, log_every=log_every,
                       checkpoint_every=checkpoint_every, progress=progress, guarded=GUARDED) as loop:
            ahead = next_inputs(loop) if start < total else None
            for step in range(start, total):
                images, target, weights = ahead
                # The next step's renders are queued before this step's model step: the devices
                # render while the host launches the step, and the binning sync waits on the
                # previous step rather than leaving the devices idle.
                ahead = next_inputs(loop) if step + 1 < total else None
                with loop.timed("step"):
                    state, metrics = train_step(state, images, target, weights)
                    loop.step_done(step + 1, state.nonfinite, metrics,
                                   save=lambda st=state: save_checkpoint(checkpoints, st, config))
            loop.check(state.nonfinite)
            logged, split = loop.logged, loop.time_split()
    finally:
        prefetch.close()
        make_batch.close()
        dispatchers.shutdown()
        checkpoints.close()
    seconds = time.perf_counter() - wall
    done = total - start
    summary = {
        "steps": total,
        "steps_this_run": done,
        "views_per_second": done * recipe.batch_size / max(seconds, 1e-9),
        "seconds": seconds,
        "time_split_seconds": split,
        "scene_transfers": {str(d): caches[d].transfers for d in local},
        "last_logged_loss": logged[-1]["loss"] if logged else None,
        "first_logged_loss": logged[0]["loss"] if logged else None,
        "logged_steps": [logged[0]["step"], logged[-1]["step"]] if logged else [],
    }
    return state, summary
