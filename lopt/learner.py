"""An optimizer as a learner of `meta.evaluate`, in both budget units:

- steps (an `InnerProblem`): the optimization curve, the training loss after k steps of a
  fresh problem, run after run;
- examples (a `data` family): at budget k, a fresh inner MLP is trained by the optimizer on the
  k examples seen (full batch, a fixed number of steps) and predicts example k+1, so learned
  optimizers, hand-designed ones, in-context learners and baselines share one table.

A hand-designed optimizer given a grid of learning rates tunes it first, on tasks or
runs drawn apart from the evaluation's."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metalearn.core.errors import UserError
from metalearn.lopt.base import HandDesigned, LearnedOptimizer, Theta
from metalearn.lopt.models import MLP
from metalearn.lopt.problems import InnerProblem, per_example_loss
from metalearn.lopt.training import loss_curve
from metalearn.meta.evaluate import Predictions
from metalearn.meta.tuning import best_of


@dataclasses.dataclass(frozen=True)
class OptimizerLearner:
    """`lopt` with meta-parameters `theta`: on an inner problem, trains it; on a task family,
    trains an MLP (`hidden` widths) for `steps` steps on the examples seen."""

    lopt: LearnedOptimizer
    theta: Theta
    name: str
    hidden: tuple[int, ...] = (32,)
    steps: int = 100
    grid: tuple[float, ...] = ()  # hand-designed only: learning rates to tune over first
    tune_sequences: int = 128  # examples: sequences to tune on
    tune_runs: int = 3  # steps: runs to tune on (best mean loss at the last budget)

    def __post_init__(self) -> None:
        if self.steps < 1 or any(h < 1 for h in self.hidden):
            raise UserError(
                f"steps and hidden widths must be positive, got {self.steps}, {self.hidden}"
            )

    def step_losses(self, problem: InnerProblem, budgets: Sequence[int], key: jax.Array):
        """The training losses [N, len(budgets)] of runs keys [N] (tuned first, if a grid)."""
        learner = self.tuned(problem, budgets, key) if self.grid else self
        budgets = tuple(budgets)
        return lambda keys: _run_losses(self.lopt, problem, budgets, learner.theta, keys)

    def predictor(self, family: Any, length: int, budgets: Sequence[int], key: jax.Array):
        """At budget k: a fresh MLP trained for `steps` steps on the k examples seen."""
        out = family.num_classes or 1
        model = MLP(self.hidden)
        idx = jnp.asarray(budgets)

        def per_example(params, x, y):
            return per_example_loss(model.apply(params, x), y, family.num_classes)

        def one(theta, x_LD, y_L, k, params):
            weight = (jnp.arange(length) < k) / jnp.maximum(k, 1)
            loss_fn = lambda p: jnp.sum(weight * per_example(p, x_LD, y_L))  # noqa: E731
            opt = self.lopt.optimizer(theta)

            def step(carry, _):
                p, s = carry
                loss, grads = jax.value_and_grad(loss_fn)(p)
                updates, s = opt.update(grads, s, p, loss=loss)
                return (optax.apply_updates(p, updates), s), None

            (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, self.steps)
            return model.apply(params, x_LD[k][None])[0]

        @jax.jit
        def predict_with(theta, x_NLD, y_NL) -> Predictions:
            keys = jax.random.split(k_init, x_NLD.shape[0])  # the same inits for every learner
            over_budgets = jax.vmap(one, (None, None, None, 0, None))
            init = lambda k: model.init(k, (family.input_dim,), out)  # noqa: E731
            o = jax.vmap(lambda x, y, k: over_budgets(theta, x, y, idx, init(k)))(x_NLD, y_NL, keys)
            if family.num_classes is None:
                return Predictions(o[..., 0])
            return Predictions(jnp.argmax(o, -1), jax.nn.log_softmax(o, -1))

        k_init, k_tune = jax.random.split(key)
        theta = self.theta
        if self.grid:
            theta = self._tune(predict_with, family, length, budgets, k_tune)
        return lambda x, y: predict_with(theta, x, y)

    def tuned(
        self, problem: InnerProblem, budgets: Sequence[int], key: jax.Array
    ) -> OptimizerLearner:
        """This learner at the grid learning rate of least mean training loss at the last
        budget over `tune_runs` runs of `problem` drawn from `key` (a diverged run counts as
        infinitely bad), named by it. One compiled program serves the whole grid."""
        self._check_tunable()
        budgets = tuple(sorted(budgets))
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(self.tune_runs))

        def score(lr: float) -> float:  # a run that diverged makes the mean non-finite
            losses = _run_losses(self.lopt, problem, budgets, {"lr": jnp.float32(lr)}, keys)
            return -float(np.mean(np.asarray(losses[:, -1])))

        best = best_of(self.grid, score)
        name = f"{self.lopt.name}(lr={best:.0e})"
        return dataclasses.replace(self, theta={"lr": jnp.float32(best)}, name=name, grid=())

    def _check_tunable(self) -> None:
        if not isinstance(self.lopt, HandDesigned):
            raise UserError(f"only hand-designed optimizers tune a learning rate, not {self.name}")

    def _tune(self, predict_with, family, length, budgets, key) -> Theta:
        """The grid learning rate with the best metric at the largest budget, on tasks drawn
        from `key` (never the evaluation tasks)."""
        self._check_tunable()
        batch = family.sample(key, self.tune_sequences, length, "all")
        target = batch.y[:, budgets[-1]]

        def score(lr: float) -> float:
            pred = predict_with({"lr": jnp.float32(lr)}, batch.x, batch.y).value[:, -1]
            if family.num_classes is None:
                return -float(jnp.mean((pred - target) ** 2))
            return float(jnp.mean(pred == target))

        return {"lr": jnp.float32(best_of(self.grid, score))}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run_losses(lopt, problem, budgets, theta, keys) -> jax.Array:
    """[N, len(budgets)]: the training losses of runs keys [N] (see `loss_curve`)."""
    return jax.vmap(lambda k: loss_curve(lopt, theta, problem, budgets, k))(keys)


def hand_designed_learner(
    name: str,
    make,
    lr: float | Sequence[float],
    hidden: tuple[int, ...] = (32,),
    steps: int = 100,
    tune_runs: int = 3,
) -> OptimizerLearner:
    """A hand-designed optax optimizer as a learner, at learning rate `lr` or tuned over the
    grid `lr` before it is evaluated, e.g.
    `hand_designed_learner("adam", optax.adam, LEARNING_RATES)` (`metalearn.meta.tuning`)."""
    grid = tuple(lr) if isinstance(lr, Sequence) else ()
    opt = HandDesigned(name, make, grid[0] if grid else lr)
    label = f"{name}(tuned lr)" if grid else f"{name}(lr={lr:.0e})"
    return OptimizerLearner(
        opt, opt.init(jax.random.key(0)), label, hidden, steps, grid, tune_runs=tune_runs
    )
