"""Inner training as a truncated unroll: learned optimizers meet the backbone's estimators."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metalearn.lopt.base import LearnedOptimizer, Theta
from metalearn.lopt.problems import InnerProblem

FINAL_BATCH = 1024  # examples on which a run's final training loss is measured


class InnerState(NamedTuple):
    params: Any
    opt_state: Any
    task: Any


@dataclasses.dataclass(frozen=True)
class InnerTraining:
    """`meta.truncated.TruncatedTask`: each episode trains a fresh inner problem for
    `horizon` steps with the learned optimizer; each step's loss is its minibatch loss, or
    its log with `log_loss` (then the meta-objective weighs a halving of the loss the same
    late in training as early, instead of being dominated by the first steps)."""

    lopt: LearnedOptimizer
    problem: InnerProblem
    horizon: int
    log_loss: bool = False

    def init(self, key: jax.Array) -> InnerState:
        params, task = self.problem.init(key)
        return InnerState(params, self.lopt.optimizer(None).init(params), task)

    def step(self, theta: Theta, state: InnerState, key: jax.Array) -> tuple[InnerState, jax.Array]:
        loss, grads = jax.value_and_grad(self.problem.loss)(state.params, state.task, key)
        opt = self.lopt.optimizer(theta)
        updates, opt_state = opt.update(grads, state.opt_state, state.params, loss=loss)
        new = InnerState(optax.apply_updates(state.params, updates), opt_state, state.task)
        return new, jnp.log(loss) if self.log_loss else loss


def _step_at(task: InnerTraining, theta: Theta, key: jax.Array):
    """Inner step i of a run, drawing from fold_in(key, i): (i, state) -> (state, loss)."""
    return lambda i, state: task.step(theta, state, jax.random.fold_in(key, i))


def loss_curve(
    lopt: LearnedOptimizer,
    theta: Theta,
    problem: InnerProblem,
    budgets: tuple[int, ...],
    key: jax.Array,
) -> jax.Array:
    """[len(budgets)]: one run's training loss (on the same FINAL_BATCH fresh examples of its
    task) after each budget of steps (sorted); `train_run`'s task, init and batches.

    One scan over the budgets, each segment a loop of inner steps up to the next budget, so
    the optimizer's update is compiled once however many budgets there are."""
    task = InnerTraining(lopt, problem, budgets[-1])
    step = _step_at(task, theta, jax.random.fold_in(key, 1))
    big = dataclasses.replace(problem, batch_size=FINAL_BATCH, min_batch=0)
    stops = jnp.asarray(budgets, jnp.int32)
    starts = jnp.concatenate([jnp.zeros(1, jnp.int32), stops[:-1]])

    def segment(state, bounds):
        state = jax.lax.fori_loop(bounds[0], bounds[1], lambda i, s: step(i, s)[0], state)
        return state, big.loss(state.params, state.task, jax.random.fold_in(key, 2))

    state = task.init(jax.random.fold_in(key, 0))
    return jax.lax.scan(segment, state, (starts, stops))[1]


def train_run(
    lopt: LearnedOptimizer, theta: Theta, problem: InnerProblem, steps: int, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One inner training run from a fresh problem: its minibatch losses [steps] and its final
    training loss (on FINAL_BATCH fresh examples of the task)."""
    task = InnerTraining(lopt, problem, steps)
    state = task.init(jax.random.fold_in(key, 0))
    step = _step_at(task, theta, jax.random.fold_in(key, 1))
    state, losses = jax.lax.scan(lambda s, i: step(i, s), state, jnp.arange(steps))
    big = dataclasses.replace(problem, batch_size=FINAL_BATCH, min_batch=0)
    return losses, big.loss(state.params, state.task, jax.random.fold_in(key, 2))
