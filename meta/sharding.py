"""Data parallelism over tasks with JAX's own runtime: one mesh axis, `tasks`.

Parameters are replicated by default; `shard_params` splits them (and anything shaped like
them, e.g. optimizer moments) over the same axis, FSDP/ZeRO-3 style: each device keeps a slice
of each large tensor and the compiler gathers whole tensors where a step needs them.

The axis is `Auto` (jax >= 0.7 makes new mesh axes explicit by default): we constrain where
batches live and let the compiler propagate the rest. In a multi-host job
(`meta.distributed`) the mesh spans every process's devices.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

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


def param_specs(tree: Any, devices: int) -> Any:
    """Per leaf, the PartitionSpec that splits its largest axis divisible by `devices` over
    the task axis; scalars, small leaves and leaves with no such axis stay replicated."""

    def spec(x: Any) -> PartitionSpec:
        shape = getattr(x, "shape", ())
        dims = [i for i, d in enumerate(shape) if d >= devices and d % devices == 0]
        if devices == 1 or not dims:
            return PartitionSpec()
        i = max(dims, key=lambda i: shape[i])
        return PartitionSpec(*([None] * i), AXIS)

    return jax.tree_util.tree_map(spec, tree)


def shard_params(tree: Any, mesh: Mesh) -> Any:
    """`tree` placed on `mesh` as `param_specs` says (outside jit)."""
    specs = param_specs(tree, mesh.shape[AXIS])
    return jax.device_put(tree, jax.tree_util.tree_map(lambda p: NamedSharding(mesh, p), specs))


def constrain_params(tree: Any) -> Any:
    """Inside jit under the task mesh: keep `tree` split as `param_specs` says."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.shape.get(AXIS, 1) == 1:
        return tree
    specs = param_specs(tree, mesh.shape[AXIS])
    return jax.tree_util.tree_map(jax.lax.with_sharding_constraint, tree, specs)
