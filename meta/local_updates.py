"""Local updates (Laskin et al. 2020, *Parallel Training of Deep Networks with Local Updates*):
the loss that trains each block of a model on its own, and its stages on different devices.

With local losses no gradient crosses a stage boundary, so a pipeline needs no backward
messages: device k runs stage k on microbatch t - k at tick t, takes its local gradient at
once, and passes only its forward activation to device k + 1 (`ppermute`). A step of M
microbatches over K stages takes M + K - 1 ticks; K - 1 of them idle each device (the bubble).
With R x K devices the pipeline is replicated R times (data parallelism beside it): pipeline r
runs on devices rK .. rK + K - 1 on its own share of every microbatch, and the gradients are
averaged over the replicas.
The backbone knows nothing of the model: it receives the first stage's input map and one
stage's loss as functions, and the stages' parameters stacked along a leading axis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

AXIS = "stages"

First = Callable[[Any, Any], jax.Array]  # (shared params, microbatch) -> stage 0's input
Stage = Callable[[Any, jax.Array, Any], tuple[jax.Array, tuple[jax.Array, dict]]]
# (one stage's params, its input activation, microbatch) -> (loss, (output activation, metrics))


def local_objective(losses: list[jax.Array]) -> jax.Array:
    """The scalar whose gradient is the sum of the blocks' local gradients and whose value is
    the last block's loss (the model's own loss, comparable with global backprop's): the other
    blocks enter as `l - stop_gradient(l)`, zero in value, their gradient in gradient. One loss
    is returned as it is."""
    extra = sum(loss - jax.lax.stop_gradient(loss) for loss in losses[:-1])
    return losses[-1] + extra


def stage_mesh(stages: int, replicas: int = 1) -> jax.sharding.Mesh:
    """A 1-D mesh along `AXIS` of the first `stages` x `replicas` devices: device r K + k runs
    stage k of pipeline r."""
    have, need = jax.device_count(), stages * replicas
    if need > have:
        raise ValueError(
            f"{stages} stages x {replicas} replicas need {need} devices, this job has {have}"
        )
    return jax.make_mesh(
        (need,), (AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:need]
    )


def local_pipeline(
    first: First,
    stage: Stage,
    shared: Any,
    stacked: Any,
    batch: Any,
    *,
    mesh: jax.sharding.Mesh,
    microbatches: int,
    axis: str = AXIS,
) -> tuple[jax.Array, dict[str, jax.Array], Any, Any]:
    """Every stage's mean loss and metrics (leading axis: stage) and the local gradients of
    `shared` (trained by stage 0's loss) and of `stacked` (leading axis: stage). `mesh[axis]`
    holds K stages x R replicas (R = 1: one stage per device): device r K + k runs stage k of
    pipeline r on the r-th share of every microbatch. The batch's leading axis is split into
    `microbatches`, each of them into R shares."""
    stages = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    devices = mesh.shape[axis]
    if devices % stages:
        raise ValueError(
            f"{stages} stages need a multiple of {stages} devices on axis {axis!r}, "
            f"the mesh has {devices}"
        )
    replicas = devices // stages
    size = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if size % (microbatches * replicas):
        raise ValueError(
            f"batch of {size} does not split into {microbatches} microbatches x {replicas} replicas"
        )
    share = size // (microbatches * replicas)

    def spread(x):
        # [size, ...] -> [microbatches, devices, share, ...]: device r K + k gets share r
        x = x.reshape(microbatches, replicas, 1, share, *x.shape[1:])
        x = jnp.broadcast_to(x, (microbatches, replicas, stages, share, *x.shape[4:]))
        return x.reshape(microbatches, devices, share, *x.shape[4:])

    mbs = jax.tree_util.tree_map(spread, batch)
    # each pipeline holds its own copy of the stages' parameters
    tiled = jax.tree_util.tree_map(lambda x: jnp.concatenate([x] * replicas), stacked)
    ticks = microbatches + stages - 1
    forward = [
        (r * stages + k, r * stages + k + 1) for r in range(replicas) for k in range(stages - 1)
    ]

    def per_device(shared, params, mbs):
        params = jax.tree_util.tree_map(lambda x: x[0], params)
        mbs = jax.tree_util.tree_map(lambda x: x[:, 0], mbs)
        k = jax.lax.axis_index(axis) % stages

        def local(shared, params, h_recv, mb):
            # stage 0 reads the first map (and so trains `shared`); the others read what came
            # from their predecessor, a constant here: no gradient crosses the boundary
            h_in = jnp.where(k == 0, first(shared, mb), h_recv)
            return stage(params, h_in, mb)

        grad_fn = jax.value_and_grad(local, argnums=(0, 1), has_aux=True)
        mb0 = jax.tree_util.tree_map(lambda x: x[0], mbs)
        h_shape = jax.eval_shape(lambda: first(shared, mb0))
        (_, (_, m_shape)), _ = jax.eval_shape(
            grad_fn, shared, params, jnp.zeros(h_shape.shape, h_shape.dtype), mb0
        )

        def tick(t, carry):
            h_recv, loss_sum, m_sum, g_shared, g_params = carry
            i = t - k  # this device's microbatch at tick t
            live = (i >= 0) & (i < microbatches)
            mb = jax.tree_util.tree_map(lambda x: x[jnp.clip(i, 0, microbatches - 1)], mbs)
            (loss, (h_out, metrics)), (gs, gp) = grad_fn(shared, params, h_recv, mb)
            w = live.astype(loss.dtype)
            add = lambda acc, g: acc + w * g  # noqa: E731
            return (
                jax.lax.ppermute(h_out, axis, forward),
                loss_sum + w * loss,
                jax.tree_util.tree_map(add, m_sum, metrics),
                jax.tree_util.tree_map(add, g_shared, gs),
                jax.tree_util.tree_map(add, g_params, gp),
            )

        zeros = lambda tree: jax.tree_util.tree_map(  # noqa: E731
            lambda x: jnp.zeros(x.shape, x.dtype), tree
        )
        carry = (zeros(h_shape), jnp.zeros(()), zeros(m_shape), zeros(shared), zeros(params))
        _, loss_sum, m_sum, g_shared, g_params = jax.lax.fori_loop(0, ticks, tick, carry)
        mean = lambda x: x / microbatches  # noqa: E731
        expand = lambda x: mean(x)[None]  # noqa: E731
        return (
            expand(loss_sum),
            jax.tree_util.tree_map(expand, m_sum),
            # only stage 0's gradient of `shared` is nonzero: the sum over devices adds the
            # replicas' stage-0 gradients
            jax.tree_util.tree_map(lambda g: jax.lax.psum(mean(g), axis) / replicas, g_shared),
            jax.tree_util.tree_map(expand, g_params),
        )

    run = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(axis), P(None, axis)),
        out_specs=(P(axis), P(axis), P(), P(axis)),
        check_vma=False,
    )
    losses, metrics, g_shared, g_params = run(shared, tiled, mbs)

    def over_replicas(x):  # [devices, ...] -> [stages, ...]: the mean over the pipelines
        return x.reshape(replicas, stages, *x.shape[1:]).mean(0)

    metrics = jax.tree_util.tree_map(over_replicas, metrics)
    g_params = jax.tree_util.tree_map(over_replicas, g_params)
    return over_replicas(losses), metrics, g_shared, g_params
