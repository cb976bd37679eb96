"""An optimizer as a learner of the examples protocol (`meta.evaluate`): at budget k, a fresh
inner MLP is trained by the optimizer on the k examples seen (full batch, a fixed number of
steps) and predicts example k+1. Learned optimizers, hand-designed ones, in-context learners
and baselines then share one table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt.base import HandDesigned, LearnedOptimizer, Theta
from lopt.models import MLP
from lopt.problems import per_example_loss
from meta.errors import UserError


@dataclasses.dataclass(frozen=True)
class OptimizerLearner:
    """`lopt` with meta-parameters `theta` training an MLP (`hidden` widths) for `steps` steps."""

    lopt: LearnedOptimizer
    theta: Theta
    name: str
    hidden: tuple[int, ...] = (32,)
    steps: int = 100
    grid: tuple[float, ...] = ()  # hand-designed only: learning rates to tune over in prepare
    tune_sequences: int = 128

    def __post_init__(self) -> None:
        if self.steps < 1 or any(h < 1 for h in self.hidden):
            raise UserError(
                f"steps and hidden widths must be positive, got {self.steps}, {self.hidden}"
            )

    def prepare(self, family: Any, length: int, budgets: Sequence[int], key: jax.Array):
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
            o = model.apply(params, x_LD[k][None])[0]
            return o[0] if family.num_classes is None else jnp.argmax(o)

        @jax.jit
        def predict_with(theta, x_NLD, y_NL):
            keys = jax.random.split(k_init, x_NLD.shape[0])  # the same inits for every learner
            over_budgets = jax.vmap(one, (None, None, None, 0, None))
            init = lambda k: model.init(k, (family.input_dim,), out)  # noqa: E731
            return jax.vmap(lambda x, y, k: over_budgets(theta, x, y, idx, init(k)))(
                x_NLD, y_NL, keys
            )

        k_init, k_tune = jax.random.split(key)
        theta = self.theta
        if self.grid:
            theta = self._tune(predict_with, family, length, budgets, k_tune)
        return lambda x, y: predict_with(theta, x, y)

    def _tune(self, predict_with, family, length, budgets, key) -> Theta:
        """The grid learning rate with the best metric at the largest budget, on tasks drawn
        from `key` (never the evaluation tasks)."""
        if not isinstance(self.lopt, HandDesigned):
            raise UserError(f"only hand-designed optimizers tune a learning rate, not {self.name}")
        batch = family.sample(key, self.tune_sequences, length, "all")
        target = batch.y[:, budgets[-1]]
        scores = {}
        for lr in self.grid:
            pred = predict_with({"lr": jnp.float32(lr)}, batch.x, batch.y)[:, -1]
            if family.num_classes is None:
                err = jnp.mean((pred - target) ** 2)
                scores[lr] = -float(err) if jnp.isfinite(err) else -float("inf")
            else:
                scores[lr] = float(jnp.mean(pred == target))
        return {"lr": jnp.float32(max(scores, key=scores.get))}


def hand_designed_learner(
    name: str,
    make,
    lr: float | Sequence[float],
    hidden: tuple[int, ...] = (32,),
    steps: int = 100,
) -> OptimizerLearner:
    """A hand-designed optax optimizer as a learner, at learning rate `lr` or tuned over the
    grid `lr` in prepare, e.g. `hand_designed_learner("adam", optax.adam, HALF_DECADES)`."""
    grid = tuple(lr) if isinstance(lr, Sequence) else ()
    opt = HandDesigned(name, make, grid[0] if grid else lr)
    label = f"{name}(tuned lr)" if grid else f"{name}(lr={lr:.0e})"
    return OptimizerLearner(opt, opt.init(jax.random.key(0)), label, hidden, steps, grid)
