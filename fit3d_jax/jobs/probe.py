"""Job ``probe``: linear probing of frozen (original / fine-tuned / assembled) DINOv2 features for
segmentation or depth; writes metrics.json, a printed table and prediction PNGs. ``config.sweep``
trains several heads (assemblies x learning rates x seeds) in one run, each written to
``<output_dir>/heads/<name>/``."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import jax
import ml_collections

from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.jobs.weights_fields import compute_dtype, load_configured_weights
from fit3d_jax.models.dinov2 import DinoV2
from fit3d_jax.probe import augment
from fit3d_jax.probe.assembly import ASSEMBLIES, NEEDS_FINETUNED, Backbones, models_for
from fit3d_jax.probe.datasets import DatasetError, check_targets, load_dataset
from fit3d_jax.probe.protocol import Protocol
from fit3d_jax.probe.train import Evaluation, Head, ProbeSettings, Schedule, evaluate_heads, train_heads
from fit3d_jax.scenes.synthetic import RoomParameterError, ensure_room
from fit3d_jax.weights import WeightsError, load_params


def _build(cls, fields: ml_collections.ConfigDict, name: str):
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.to_dict().items()}
    try:
        return cls(**values)
    except TypeError as e:
        raise ConfigError(f"config.{name}: {e}") from None


def settings_from(config: ml_collections.ConfigDict) -> ProbeSettings:
    settings = ProbeSettings(
        schedule=_build(Schedule, config.schedule, "schedule"),
        augment=_build(augment.Augment, config.augment, "augment"),
        evaluation=_build(Evaluation, config.evaluation, "evaluation"),
        protocol=_build(Protocol, config.protocol, "protocol"),
        cache_features=config.cache_features,
        decoded_cache_gb=config.decoded_cache_gb,
        device_dataset_gb=config.device_dataset_gb,
        fused_loss=config.fused_loss,
    )
    s = settings.schedule
    try:
        settings.protocol.check()
    except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    group = settings.protocol.depth_loss_group
    if config.task == "depth" and group and s.batch_size % group:
        raise ConfigError(f"config.protocol.depth_loss_group={group} does not divide config.schedule.batch_size={s.batch_size}")
    return settings


def heads_from(config: ml_collections.ConfigDict) -> list[Head]:
    """The run's heads: every combination of config.sweep's lists, named by what varies."""
    sweep = config.sweep

    def values(field: str, default, parse):
        text = sweep[field].strip()
        try:
            parsed = [parse(v.strip()) for v in text.split(",")] if text else [default]
        except ValueError:
            raise ConfigError(f"config.sweep.{field}={text!r} is not a comma-separated list of {parse.__name__} values") from None
        if len(set(parsed)) != len(parsed):
            raise ConfigError(f"config.sweep.{field}={text!r} repeats a value")
        return parsed

    assemblies = values("assemblies", config.assembly, str)
    rates = values("learning_rates", config.schedule.learning_rate, float)
    seeds = values("seeds", config.seed, int)
    for assembly in assemblies:
        if assembly not in ASSEMBLIES:
            raise ConfigError(f"config.sweep.assemblies: {assembly!r} is not one of {ASSEMBLIES}")
    if any(not rate > 0 for rate in rates):
        raise ConfigError(f"config.sweep.learning_rates={sweep.learning_rates!r}: learning rates must be positive")
    heads = []
    for assembly, rate, seed in itertools.product(assemblies, rates, seeds):
        parts = [assembly] + ([f"lr{rate:g}"] if len(rates) > 1 else []) + ([f"seed{seed}"] if len(seeds) > 1 else [])
        heads.append(Head("_".join(parts), assembly, rate, seed))
    return heads


def backbone_params(config: ml_collections.ConfigDict, assemblies: list[str]):
    """The original weights and, where an assembly needs them, the fine-tuned checkpoint's."""
    original = load_configured_weights(config)
    params = {"original": original.params}
    if "finetuned" in models_for(assemblies):
        if not config.finetuned:
            needing = sorted(set(assemblies) & set(NEEDS_FINETUNED))
            raise ConfigError(f"assembly {', '.join(needing)} needs config.finetuned (the finetune job's "
                              "<output_dir>/checkpoints, or any Orbax checkpoint of the same architecture)")
        try:
            tuned, tuned_config = load_params(config.finetuned)
        except WeightsError as e:
            raise ConfigError(f"config.finetuned: {e}") from None
        if tuned_config.to_dict() != original.config.to_dict():
            raise ConfigError(f"config.finetuned is {tuned_config.describe()}, the original weights are {original.config.describe()}")
        params["finetuned"] = tuned
        print(f"probe: fine-tuned weights from {Path(config.finetuned).absolute()}")
    return original.config, params


def synthetic_rooms(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """config.data, with the built-in probe rooms generated and filled in where the config has
    ``rooms`` and names no scenes."""
    data = ml_collections.ConfigDict(config.data.to_dict())
    if "rooms" not in config or data.get("train") or data.get("test"):
        return data
    r = config.rooms
    for split, first, count in (("train", 100, r.train_rooms), ("test", 200, r.test_rooms)):
        folder = Path(r.output_dir) / f"{r.width}x{r.height}_{r.views}" / split
        for seed in range(first, first + count):
            try:
                ensure_room(folder / f"room_{seed:04d}", seed=seed, width=r.width, height=r.height, num_train=r.views, num_test=1)
            except (RoomParameterError, FileExistsError) as e:
                raise ConfigError(f"config.rooms: {e}") from None
        data[split] = str(folder)
    print(f"probe: synthetic rooms {data.train} (train) and {data.test} (test)")
    return data


def table(metrics: dict, task: str) -> str:
    names = ("mIoU", "mAcc", "aAcc") if task == "segmentation" else ("rmse", "abs_rel", "a1", "a2", "a3", "sq_rel", "rmse_log", "log10", "silog")
    return "| " + " | ".join(names) + " |\n|" + "---|" * len(names) + "\n| " + " | ".join(f"{metrics[n]:.4f}" for n in names) + " |"


def run(config: ml_collections.ConfigDict) -> None:
    if config.distributed:
        jax.distributed.initialize()
    dtype = compute_dtype(config)
    settings = settings_from(config)
    try:
        dataset = load_dataset(synthetic_rooms(config), config.task)
    except DatasetError as e:
        raise ConfigError(str(e)) from None
    for split in (dataset.train, dataset.test):
        if len(split) == 0:  # checked before training: an empty test split would give NaN metrics
            raise ConfigError(f"config.data: {split.name} has no examples")
    try:
        checked = check_targets(dataset)
    except DatasetError as e:
        raise ConfigError(f"config.data: {e}") from None
    print(f"probe: the {checked} {'label maps' if config.task == 'segmentation' else 'depth maps'} of {dataset.name} are usable")
    heads = heads_from(config)
    output_dir = outputs.claim_output_dir(config.output_dir, "probe", "config.output_dir", primary=jax.process_index() == 0)
    vit_config, params = backbone_params(config, [h.assembly for h in heads])
    model = DinoV2(vit_config, dtype=dtype)
    assemblies = [Backbones(model, h.assembly, config.task, settings.protocol.features) for h in heads]
    print(f"probe: {config.task} on {dataset.name} ({len(dataset.train)} train / {len(dataset.test)} test examples), "
          f"{settings.schedule.iterations} iterations, global batch {settings.schedule.batch_size}, {jax.device_count()} device(s)")
    for head, b in zip(heads, assemblies):
        channels = f"{b.feature_dim} channels" + (f" + CLS {b.cls_dim}" if config.task == "depth" else "")
        print(f"probe: head {head.name}: assembly {head.assembly} ({channels}), learning rate {head.learning_rate:g}, seed {head.seed}")
    run_identity = {"data": json.loads(json.dumps(config.data.to_dict(), default=str)), "dtype": config.dtype,
                    "weights": config.weights, "finetuned": str(Path(config.finetuned).resolve()) if config.finetuned else ""}
    folders = [output_dir] if len(heads) == 1 else [output_dir / "heads" / h.name for h in heads]
    try:
        tasks, states, summary = train_heads(dataset, list(zip(heads, assemblies)), params, settings, output_dir, seed=config.seed,
                                             log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                                             progress=config.progress, identity=run_identity)
        evaluated = [(tasks[h.name], b, states[h.name], folder) for h, b, folder in zip(heads, assemblies, folders)]
        results = evaluate_heads(evaluated, dataset, params, settings, progress=config.progress)
    except DatasetError as e:
        raise ConfigError(f"config.data: {e}") from None
    if jax.process_index() == 0:
        for head, metrics, folder in zip(heads, results, folders):
            record = {"task": config.task, "dataset": dataset.name, "head": dataclasses.asdict(head), "assembly": head.assembly,
                      "seed": head.seed, "data_seed": config.seed, "metrics": metrics, "training": summary,
                      "settings": dataclasses.asdict(settings), "config": config.to_dict()}
            folder.mkdir(parents=True, exist_ok=True)
            outputs.write_json(folder / "metrics.json", json.loads(json.dumps(record, default=str)))
            if len(heads) > 1:
                print(f"probe: head {head.name}")
            print(table(metrics, config.task))
        if len(heads) > 1:
            overview = {"task": config.task, "dataset": dataset.name, "heads": {h.name: {"head": dataclasses.asdict(h), "metrics": m}
                                                                               for h, m in zip(heads, results)}, "training": summary}
            outputs.write_json(output_dir / "metrics.json", json.loads(json.dumps(overview, default=str)))
        where = output_dir.absolute() / ("heads/<name>" if len(heads) > 1 else "")
        print(f"probe: metrics in {where / 'metrics.json'}, predictions in {where / 'predictions'}")
