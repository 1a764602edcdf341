"""The data-parallel device mesh every stage trains on: batch sharded, parameters replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fit3d_jax.errors import ConfigError


def data_mesh() -> Mesh:
    """All devices of all processes along one axis, ``data``."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batched(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def per_device(batch_size: int, mesh: Mesh, field: str) -> int:
    """The rows each device takes; a batch that does not divide evenly is the config's mistake."""
    if batch_size < 1 or batch_size % mesh.size:
        raise ConfigError(f"{field}={batch_size} must be a positive multiple of the {mesh.size} devices")
    return batch_size // mesh.size


def global_batch(local: np.ndarray, mesh: Mesh, global_size: int) -> jax.Array:
    """This process's rows of a batch as the global array sharded over ``mesh``."""
    return jax.make_array_from_process_local_data(batched(mesh), local, (global_size, *local.shape[1:]))
