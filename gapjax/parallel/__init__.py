"""Data parallelism with ``jax.jit`` + ``NamedSharding`` (no ``jax.pmap``).

One mesh axis ``"data"``: the batch's leading axis is split over it, parameters
and optimizer state are replicated. The same jitted step runs on 1 device or N
(and on several hosts after :func:`initialize_distributed`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh ``("data",)`` over the first ``num_devices`` (default: all).

    Uses ``AxisType.Auto`` so that jit's sharding propagation places the
    reductions (the classic data-parallel behaviour).
    """
    n = jax.device_count() if num_devices is None else int(num_devices)
    if n < 1 or n > jax.device_count():
        raise ValueError(f"num_devices must be in [1, {jax.device_count()}], got {n}")
    devices = jax.devices()[:n]
    return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over ``"data"``."""
    return NamedSharding(mesh, P(DATA))


def shard_batch(batch, mesh: jax.sharding.Mesh):
    """Places a host batch (pytree) with its leading axis split over ``"data"``.

    Raises ValueError if a leading dimension is not divisible by the mesh size.
    In a multi-process run every process passes the *global* batch (the same
    array on every host, e.g. from a shared key) and keeps only its shards.
    """
    n = mesh.shape[DATA]
    sharding = batch_sharding(mesh)

    def put(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(f"batch leading dimension {x.shape[:1]} must be divisible "
                             f"by the number of devices on the 'data' axis ({n})")
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, batch)


def replicate(tree, mesh: jax.sharding.Mesh):
    """Places a pytree replicated on every device of the mesh."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def initialize_distributed(coordinator_address: str, num_processes: int,
                           process_id: int, local_device_ids=None) -> None:
    """Multi-host start: a thin wrapper over ``jax.distributed.initialize``.

    On CPU it also selects the gloo collectives so that cross-process
    all-reduces work without accelerators.
    """
    # Only affects the CPU client; must be set before the backend starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)

