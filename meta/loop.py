"""The one meta-training loop: sample tasks, estimate a meta-gradient, apply the outer optimizer.

Step s draws its randomness from `fold_in(data_key, s)`, so a run resumed from a checkpoint
replays exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metalearn.core.errors import NonFiniteError, UserError
from metalearn.meta.distributed import is_lead
from metalearn.meta.logs import MetricsLog
from metalearn.meta.objective import GradientEstimator, Theta
from metalearn.meta.optim import OptimConfig
from metalearn.meta.sharding import constrain_params, shard_params, task_mesh


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long to train and how often to log, evaluate and checkpoint (0 = never)."""

    steps: int = 1000
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    progress: bool = True
    tensorboard: bool = False
    # split parameters and optimizer state over the devices (FSDP-style, meta.sharding)
    # instead of replicating them: memory for gathers, for models too big for one device
    shard_params: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise UserError(f"loop.steps must be a positive int, got {self.steps}")
        for name in ("log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise UserError(f"loop.{name} must be >= 0 (0 = never), got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise UserError(f"loop.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


class TrainState(NamedTuple):
    theta: Theta
    opt_state: Any
    est_state: Any


class TrainResult(NamedTuple):
    theta: Theta
    step: int
    last: dict[str, float]


def initial_state(
    init: Callable[[jax.Array], Theta],
    estimator: GradientEstimator,
    optim: OptimConfig,
    loop: LoopConfig,
) -> tuple[TrainState, jax.Array]:
    """The state before step 0, and the key whose fold_in(., step) feeds each step."""
    k_init, k_est, k_data = jax.random.split(jax.random.key(loop.seed), 3)
    theta = init(k_init)
    opt_state = optim.make(loop.steps).init(theta)
    return TrainState(theta, opt_state, estimator.init(k_est, theta)), k_data


def meta_train(
    init: Callable[[jax.Array], Theta],
    estimator: GradientEstimator,
    optim: OptimConfig,
    loop: LoopConfig,
    run_dir: Path | None = None,
    *,
    resume: bool = False,
    periodic_eval: Callable[[Theta], dict[str, float]] | None = None,
) -> TrainResult:
    """Meta-train `init`'s parameters with gradients from `estimator`.

    Writes `run_dir/metrics.jsonl` and orbax checkpoints under `run_dir/checkpoints` when a
    run directory is given. Raises NonFiniteError naming the step and quantity on NaN/inf.
    """
    state, k_data = initial_state(init, estimator, optim, loop)
    # the step donates its input: give every leaf its own buffer (an estimator's initial state
    # may hold one array twice, e.g. two particles that start equal)
    state = jax.tree_util.tree_map(lambda x: x.copy() if hasattr(x, "copy") else x, state)
    mesh = task_mesh()
    if loop.shard_params:  # before a resume: the checkpoint restores into these shardings
        state = state._replace(
            theta=shard_params(state.theta, mesh), opt_state=shard_params(state.opt_state, mesh)
        )
    optimizer = optim.make(loop.steps)
    schedule = optim.schedule(loop.steps)

    ckpt = log = None
    start = 0
    lead = is_lead()  # in a multi-host job one process logs and shows progress
    if run_dir is not None:
        from metalearn.meta.checkpoint import Checkpointer

        ckpt = Checkpointer(Path(run_dir) / "checkpoints", keep=loop.keep_checkpoints)
        if resume:
            try:
                start, state = resume_state(ckpt, state, run_dir, lead)
            except UserError:
                ckpt.close()
                raise
        if lead:
            log = MetricsLog(
                Path(run_dir) / "metrics.jsonl",
                resume_from=start if resume else None,
                tensorboard=Path(run_dir) / "tb" if loop.tensorboard else None,
            )

    # the data key is an argument, not a constant of the program: runs that differ only in
    # their seed share one compiled step through the persistent cache
    def train_step(
        state: TrainState, key: jax.Array, step: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        state, metrics = outer_step(estimator, optimizer, state, key, step)
        if loop.shard_params:
            state = state._replace(
                theta=constrain_params(state.theta), opt_state=constrain_params(state.opt_state)
            )
        return state, metrics

    step_fn = jax.jit(train_step, donate_argnums=0)
    bar = progress_bar(loop, start) if lead else None
    last: dict[str, float] = {}
    t0 = time.perf_counter()

    def settle(step: int, metrics: dict[str, jax.Array]) -> None:
        """Fetch one step's metrics, stop on NaN/inf, log them."""
        nonlocal last
        last = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(step + 1, last)  # counted as metrics.jsonl counts: steps done
        done = step + 1
        if bar is not None:
            bar.update(1)
        if loop.log_every and (done % loop.log_every == 0 or done == loop.steps):
            rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if log is not None:
                log.write(done, {**last, "lr": float(schedule(step)), "steps_per_s": rate})

    try:
        with jax.set_mesh(mesh):
            pending = None
            for step in range(start, loop.steps):
                state, metrics = step_fn(state, k_data, jnp.asarray(step, jnp.int32))
                # check the previous step while this one runs: no host sync per step
                if pending is not None:
                    settle(*pending)
                pending = (step, metrics)
                done = step + 1
                evaluate = (
                    periodic_eval is not None and loop.eval_every and done % loop.eval_every == 0
                )
                save = ckpt is not None and (
                    (loop.checkpoint_every and done % loop.checkpoint_every == 0)
                    or done == loop.steps
                )
                if evaluate or save or done == loop.steps:
                    settle(*pending)  # never evaluate or save a state not yet checked
                    pending = None
                if evaluate:
                    scores = periodic_eval(state.theta)
                    if log is not None:
                        log.write(done, {f"eval/{k}": v for k, v in scores.items()})
                    if bar is not None:
                        bar.write(
                            f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
                        )
                if save:
                    ckpt.save(done, tuple(state))
    finally:
        if bar is not None:
            bar.close()
        if ckpt is not None:
            ckpt.close()
        if log is not None:
            log.close()
    return TrainResult(state.theta, loop.steps, last)


def outer_step(
    estimator: GradientEstimator,
    optimizer: optax.GradientTransformation,
    state: TrainState,
    key: jax.Array,
    step: jax.Array,
    lr_scale: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One meta-training step: estimate at `fold_in(key, step)`, then the outer update
    (multiplied by `lr_scale` when given: the update is proportional to the learning rate)."""
    est = estimator.estimate(state.theta, state.est_state, jax.random.fold_in(key, step), step)
    updates, opt_state = optimizer.update(est.grad, state.opt_state, state.theta)
    if lr_scale is not None:
        updates = jax.tree_util.tree_map(lambda u: u * lr_scale.astype(u.dtype), updates)
    theta = optax.apply_updates(state.theta, updates)
    metrics = {**est.metrics, "loss": est.loss, "grad_norm": optax.tree.norm(est.grad)}
    return TrainState(theta, opt_state, est.state), metrics


def resume_state(ckpt: Any, state: TrainState, run_dir: Path, lead: bool) -> tuple[int, TrainState]:
    """The step and state of a run's newest intact checkpoint ((0, `state`) when it has none
    yet); damaged ones are set aside (by the lead process) with a line on stderr. Raises
    UserError when there are checkpoints but none restores."""
    step, restored, skipped = ckpt.restore_newest(tuple(state), set_aside=lead)
    if restored is None and skipped:
        raise UserError(
            f"no intact checkpoint in {str(run_dir)!r} to resume from ("
            + "; ".join(skipped)
            + "); pass --force to start over"
        )
    for note in skipped:
        print(f"metalearn: {note}", file=sys.stderr)
    if restored is None:
        return 0, state
    if skipped:
        print(f"metalearn: resuming from checkpoint {step}", file=sys.stderr)
    return step, TrainState(*restored)


def check_finite(step: int, metrics: dict[str, float]) -> None:
    for name in ("loss", "grad_norm", *sorted(metrics)):
        value = metrics.get(name)
        if value is not None and not math.isfinite(value):
            raise NonFiniteError(step, "gradient norm" if name == "grad_norm" else name, value)


def progress_bar(loop: LoopConfig, start: int, desc: str = "meta-train"):
    if not loop.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=loop.steps, initial=start, desc=desc, dynamic_ncols=True, mininterval=1.0)
