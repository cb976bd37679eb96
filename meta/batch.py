"""Several runs meta-trained as one batched model: one jitted step advances every member.

Members are setups that `batch_key` finds equal: the same objective up to the scalars their
experiment can trace (`Setup.batchable`, e.g. a task pool's size), the same outer optimizer up
to its learning rate, the same loop up to its seed. Each member keeps its own run directory,
written as a run trained alone writes it - metrics.jsonl and checkpoints of its own unstacked
state - so it can be loaded, evaluated or resumed alone, and a member draws exactly the data
it would draw alone. On accelerators the members are vmapped; on a CPU the step loops over
them (`_vectorize` says why). What can differ from a run alone is float rounding: XLA may
order the sums of a batched matmul differently (tests/test_batch.py bounds it).

Learning rates: the outer update is proportional to the learning rate (Adam(W) and SGD under
a schedule that scales with it; clipping acts on the gradient before), so a member's update is
the first member's multiplied by lr / first lr - exactly the first's when they are equal.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Hashable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

from metalearn.core.errors import NonFiniteError, UserError
from metalearn.meta.distributed import is_lead
from metalearn.meta.experiment import Setup
from metalearn.meta.logs import MetricsLog
from metalearn.meta.loop import (
    TrainResult,
    check_finite,
    initial_state,
    outer_step,
    progress_bar,
    resume_state,
)
from metalearn.meta.sharding import task_mesh


def _vectorize() -> bool:
    """vmap the members on accelerators; on a CPU, loop over them inside the one jitted step
    (`lax.map`): XLA's CPU matmuls batched over members cost more per member than one
    member's (measured on 2 cores of an AMD EPYC: 15.7 ms against 10-12 ms per member for
    study 2's width-32 step), while the loop keeps what batching saves per point - one
    process, one compilation, one dispatch per step."""
    return jax.default_backend() != "cpu"


def batch_key(setup: Setup) -> Hashable | None:
    """Equal for setups that can train together in one vmapped step; None when this one
    cannot train batched (its experiment declares no `batchable`)."""
    b = setup.batchable
    if b is None or setup.loop.shard_params:  # sharded parameters train alone
        return None
    return (
        b.signature,
        tuple(sorted(b.scalars)),
        dataclasses.replace(setup.optim, lr=1.0),
        dataclasses.replace(setup.loop, seed=0),
    )


def meta_train_batch(
    setups: Sequence[Setup], run_dirs: Sequence[Path], *, resume: Sequence[bool]
) -> list[TrainResult | NonFiniteError]:
    """Meta-train every setup into its run directory, all in one vmapped step.

    `resume[i]`: member i continues from its newest intact checkpoint; all members must then
    stand at the same step (a UserError says which do not: train those apart). A member whose
    loss or gradient turns NaN/inf is stopped there - its NonFiniteError takes its place in
    the result - while the others go on.
    """
    if not setups or len(setups) != len(run_dirs) or len(setups) != len(resume):
        raise ValueError("meta_train_batch needs one run directory and resume flag per setup")
    keys = [batch_key(s) for s in setups]
    if keys[0] is None or any(k != keys[0] for k in keys):
        raise ValueError("these setups cannot train in one batch (batch_key differs)")
    first = setups[0]
    loop = first.loop
    optimizer = first.optim.make(loop.steps)
    schedule = first.optim.schedule(loop.steps)
    lead = is_lead()
    from metalearn.meta.checkpoint import Checkpointer

    states, data_keys, ckpts, logs, starts = [], [], [], [], []
    try:
        for setup, run_dir, again in zip(setups, run_dirs, resume, strict=True):
            state, k_data = initial_state(setup.init, setup.estimator, setup.optim, setup.loop)
            ckpt = Checkpointer(Path(run_dir) / "checkpoints", keep=loop.keep_checkpoints)
            ckpts.append(ckpt)
            start, state = resume_state(ckpt, state, run_dir, lead) if again else (0, state)
            states.append(state)
            data_keys.append(jax.random.key_data(k_data))
            starts.append(start)
        if len(set(starts)) > 1:
            at = ", ".join(f"{Path(d).name} at {s}" for d, s in zip(run_dirs, starts, strict=True))
            raise UserError(f"batched runs stand at different steps ({at}); train them apart")
        start = starts[0]
        if lead:
            logs = [
                MetricsLog(
                    Path(d) / "metrics.jsonl",
                    resume_from=start if again else None,
                    tensorboard=Path(d) / "tb" if loop.tensorboard else None,
                )
                for d, again in zip(run_dirs, resume, strict=True)
            ]
        return _train(setups, states, data_keys, ckpts, logs, start, optimizer, schedule)
    finally:
        for ckpt in ckpts:
            ckpt.close()
        for log in logs:
            log.close()


def _train(setups, states, data_keys, ckpts, logs, start, optimizer, schedule):
    first = setups[0]
    loop, members = first.loop, len(setups)
    traced = first.batchable.estimator
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
    # every leaf its own buffer: the step donates its input
    stacked = jax.tree_util.tree_map(lambda x: x.copy(), stacked)
    k_data = jax.random.wrap_key_data(jnp.stack(data_keys))
    names = sorted(first.batchable.scalars)
    scalars = {n: jnp.asarray([s.batchable.scalars[n] for s in setups]) for n in names}
    lr_scale = jnp.asarray([s.optim.lr / first.optim.lr for s in setups], jnp.float32)

    def member_step(state, key, step, values, scale):
        return outer_step(traced(values), optimizer, state, key, step, scale)

    if _vectorize():
        advance = jax.vmap(member_step, in_axes=(0, 0, None, 0, 0))
    else:

        def advance(state, key, step, values, scale):
            return jax.lax.map(
                lambda m: member_step(*m[:2], step, *m[2:]), (state, key, values, scale)
            )

    step_fn = jax.jit(advance, donate_argnums=0)
    outcome: list[TrainResult | NonFiniteError | None] = [None] * members
    last: list[dict[str, float]] = [{} for _ in setups]
    bar = progress_bar(loop, start, f"meta-train x{members}") if logs else None
    t0 = time.perf_counter()

    def member(tree, i):
        return jax.tree_util.tree_map(lambda x: x[i], tree)

    def settle(step: int, metrics) -> None:
        fetched = jax.device_get(metrics)
        done = step + 1
        rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
        for i in range(members):
            if outcome[i] is not None:
                continue  # stopped at a NaN
            last[i] = {k: float(v[i]) for k, v in fetched.items()}
            try:
                check_finite(done, last[i])
            except NonFiniteError as e:
                outcome[i] = e
                continue
            if logs and loop.log_every and (done % loop.log_every == 0 or done == loop.steps):
                lr = float(schedule(step)) * setups[i].optim.lr / first.optim.lr
                logs[i].write(done, {**last[i], "lr": lr, "steps_per_s": rate})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{min(v.get('loss', float('inf')) for v in last):.4f}")

    try:
        with jax.set_mesh(task_mesh()):
            pending = None
            for step in range(start, loop.steps):
                stacked, metrics = step_fn(
                    stacked, k_data, jnp.asarray(step, jnp.int32), scalars, lr_scale
                )
                if pending is not None:
                    settle(*pending)  # the previous step's, while this one runs
                pending = (step, metrics)
                done = step + 1
                evaluate = loop.eval_every and done % loop.eval_every == 0
                save = (loop.checkpoint_every and done % loop.checkpoint_every == 0) or (
                    done == loop.steps
                )
                if evaluate or save or done == loop.steps:
                    settle(*pending)
                    pending = None
                if all(o is not None for o in outcome):
                    break  # every member stopped at a NaN
                for i, setup in enumerate(setups):
                    if outcome[i] is not None:
                        continue
                    if evaluate and setup.periodic_eval is not None:
                        scores = setup.periodic_eval(member(stacked, i).theta)
                        if logs:
                            logs[i].write(done, {f"eval/{k}": v for k, v in scores.items()})
                    if save:
                        ckpts[i].save(done, tuple(member(stacked, i)))
    finally:
        if bar is not None:
            bar.close()
    return [
        o if o is not None else TrainResult(member(stacked, i).theta, loop.steps, last[i])
        for i, o in enumerate(outcome)
    ]
