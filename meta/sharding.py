"""Data parallelism over tasks with JAX's own runtime: one mesh axis, `tasks`.

The axis is `Auto` (jax >= 0.7 makes new mesh axes explicit by default): we constrain where
batches live and let the compiler propagate the rest. In a multi-host job
(`meta.distributed`) the mesh spans every process's devices.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, Mesh, PartitionSpec

AXIS = "tasks"


def task_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh over all (or the given) devices, sharding the task axis."""
    devices = list(devices or jax.devices())
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def shard_tasks(tree: Any) -> Any:
    """Constrain every leaf's leading (task) axis to be split across the active mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.shape.get(AXIS, 1) == 1:
        return tree
    n = mesh.shape[AXIS]

    def constrain(x: jax.Array) -> jax.Array:
        if x.ndim == 0 or x.shape[0] % n:
            return x
        return jax.lax.with_sharding_constraint(x, PartitionSpec(AXIS))

    return jax.tree_util.tree_map(constrain, tree)
