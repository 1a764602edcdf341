"""Job ``generate_rooms``: synthetic rooms <output_dir>/room_<seed> for seeds first_seed ... ."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from pathlib import Path

import ml_collections

from fit3d_jax.errors import ConfigError
from fit3d_jax.harness import outputs
from fit3d_jax.scenes import synthetic
from fit3d_jax.scenes.synthetic.rooms import check_replaceable

ROOM_FIELDS = ("width", "height", "num_train", "num_test", "fov_x_deg", "num_points", "point_noise")


def room_dir(output_dir: str | os.PathLike, seed: int) -> Path:
    return Path(output_dir) / f"room_{seed:04d}"


def _make(out_dir: Path, seed: int, params: dict, overwrite: bool) -> str:
    """Generates one room (unless it is there already); returns what happened."""
    if not overwrite and synthetic.has_room(out_dir, seed=seed, **params):
        return f"{out_dir}: kept (generated before with the same parameters)"
    start = time.perf_counter()
    synthetic.generate_room(out_dir, seed=seed, overwrite=overwrite, **params)
    return f"{out_dir}: generated in {time.perf_counter() - start:.1f} s"


def _check(config: ml_collections.ConfigDict) -> dict:
    params = {field: config[field] for field in ROOM_FIELDS}
    try:
        synthetic.room_parameters(seed=config.first_seed, **params)
    except synthetic.RoomParameterError as e:
        raise ConfigError(f"config.{e}") from None
    return params


def run(config: ml_collections.ConfigDict) -> None:
    params = _check(config)
    # Rooms are protected one by one (each holds its generator record; check_replaceable), so the
    # folder itself may hold rooms from the lift's built-in room too: checked and locked, not claimed.
    outputs.lock(outputs.output_dir(config.output_dir, "config.output_dir"), "config.output_dir")
    seeds = range(config.first_seed, config.first_seed + config.num_rooms)
    workers = min(config.num_workers or os.cpu_count() or 1, len(seeds))
    jobs = [(room_dir(config.output_dir, seed), seed, params, config.overwrite) for seed in seeds]
    for out_dir, seed, _, _ in jobs:  # every room checked before any is (re)generated
        outputs.remove_stale_staging(out_dir)
        try:
            check_replaceable(out_dir, synthetic.room_parameters(seed=seed, **params), config.overwrite)
        except FileExistsError as e:
            raise ConfigError(f"config.output_dir: {e} (config.overwrite=True replaces generated rooms)") from None
    try:
        if workers == 1:
            results = [_make(*job) for job in jobs]
        else:
            # spawn: the parent may hold threads (JAX) that fork would copy in a broken state
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(_make, *zip(*jobs)))
    except FileExistsError as e:
        raise ConfigError(f"config.output_dir: {e} (config.overwrite=True replaces generated rooms)") from None
    for line in results:
        print(line, flush=True)
    views = config.num_train + config.num_test
    print(f"generate_rooms: {len(results)} rooms of {views} views at {config.width}x{config.height} in {Path(config.output_dir).absolute()}")
