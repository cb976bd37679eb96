"""The skeleton every learned optimizer's update shares: per-tensor work over a parameter tree,
and optimizer state of a fixed dtype.

The state is float32 whatever the parameters' dtype (bfloat16 parameters included), so it
keeps one dtype structure from step to step: `lax.scan` over training steps needs that, and a
jitted step then compiles once. Updates are cast back to each parameter's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

STATE_DTYPE = jnp.float32


def stat_zeros(params: optax.Params, num: int) -> optax.Params:
    """Zero statistics S + (num,) of every tensor of shape S (`num` decays on the last axis)."""
    return jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape + (num,), STATE_DTYPE), params)


def tensors(params: optax.Params, *trees: Any) -> tuple[jax.tree_util.PyTreeDef, list[tuple]]:
    """The structure of `params` and, per tensor, its leaf of `params` and of each tree (a
    tree may hold a subtree per tensor, e.g. the `Factored` statistics)."""
    tree = jax.tree_util.tree_structure(params)
    leaves = [tree.flatten_up_to(t) for t in (params, *trees)]
    return tree, list(zip(*leaves, strict=True))


def map_tensors(fn: Callable[..., tuple], params: optax.Params, *trees: Any) -> tuple:
    """`fn(p, *leaves)` on every tensor; its outputs regrouped into one tree each."""
    tree, per_tensor = tensors(params, *trees)
    results = [fn(*args) for args in per_tensor]
    return tuple(tree.unflatten(list(r)) for r in zip(*results, strict=True))


def update_like(step: jax.Array, p: jax.Array) -> jax.Array:
    """The update -step in the shape and dtype of the parameter."""
    return -step.reshape(p.shape).astype(p.dtype)
