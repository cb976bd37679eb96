"""What the backbone trains: an objective with `init(key) -> theta` and a meta-loss, and the
gradient estimators that turn it into meta-gradients. No model code lives here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax

from metalearn.meta.sharding import shard_tasks

Theta = Any  # a pytree of arrays


class Objective(Protocol):
    """A meta-objective: fresh meta-parameters, a batch of tasks per step, a loss on it."""

    def init(self, key: jax.Array) -> Theta: ...

    def sample(self, key: jax.Array, step: jax.Array) -> Any:
        """A batch of tasks (a pytree whose leaves lead with the task axis)."""
        ...

    def loss(self, theta: Theta, batch: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar meta-loss and named metrics."""
        ...


class Estimate(NamedTuple):
    """One meta-gradient estimate."""

    loss: jax.Array
    grad: Theta
    state: Any
    metrics: dict[str, jax.Array]


class GradientEstimator(Protocol):
    """Turns meta-parameters into a loss and gradient estimate; may carry state across steps
    (truncated unrolls do)."""

    def init(self, key: jax.Array, theta: Theta) -> Any: ...

    def estimate(self, theta: Theta, state: Any, key: jax.Array, step: jax.Array) -> Estimate: ...


class Estimator(NamedTuple):
    """A gradient estimator as a value: a pair of pure functions (like an optax
    `GradientTransformation`). Factories build them: `backprop` here, the truncated-unroll
    estimators in `meta.estimators`."""

    init: Callable[[jax.Array, Theta], Any]
    estimate: Callable[[Theta, Any, jax.Array, jax.Array], Estimate]


def backprop(objective: Objective) -> Estimator:
    """Exact gradient of the objective's loss on a freshly sampled batch of tasks, the task
    axis sharded over the active mesh."""

    def init(key: jax.Array, theta: Theta) -> tuple[()]:
        del key, theta
        return ()

    def estimate(theta: Theta, state: Any, key: jax.Array, step: jax.Array) -> Estimate:
        batch = shard_tasks(objective.sample(key, step))
        (loss, metrics), grad = jax.value_and_grad(objective.loss, has_aux=True)(theta, batch)
        return Estimate(loss, grad, state, metrics)

    return Estimator(init, estimate)
