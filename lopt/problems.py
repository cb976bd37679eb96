"""Inner problems: a model trained by an optimizer on batches of one task of a `data` family."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import data
from meta.errors import UserError


class Problem(NamedTuple):
    """One inner problem: the model's parameters at initialization and the task it learns."""

    params: Any
    task: Any


@dataclasses.dataclass(frozen=True)
class MLPProblem:
    """An MLP (ReLU, `hidden` widths) fit to one task of `family`, minibatches of
    `batch_size` examples drawn from the task. E.g. an MLP classifying one random projection of
    the digits with permuted labels."""

    family: str = "projected:base=digits,dim=16"
    hidden: tuple[int, ...] = (32,)
    batch_size: int = 128

    def __post_init__(self) -> None:
        if any(h < 1 for h in self.hidden) or self.batch_size < 1:
            raise UserError(
                f"hidden widths and batch_size must be positive, got {self.hidden} and "
                f"{self.batch_size}"
            )

    @functools.cached_property
    def fam(self) -> data.TaskFamily:
        return data.from_spec(self.family)

    @property
    def out_size(self) -> int:
        return self.fam.num_classes or 1

    def init(self, key: jax.Array) -> Problem:
        k_task, k_params = jax.random.split(key)
        sizes = [self.fam.input_dim, *self.hidden, self.out_size]
        keys = jax.random.split(k_params, len(sizes) - 1)
        params = {
            f"layer{i}": {
                "w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a),
                "b": jnp.zeros(b),
            }
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:], strict=True))
        }
        return Problem(params, self.fam.sample_task(k_task))

    def apply(self, params: Any, x: jax.Array) -> jax.Array:
        n = len(params)
        for i in range(n):
            x = x @ params[f"layer{i}"]["w"] + params[f"layer{i}"]["b"]
            if i < n - 1:
                x = jax.nn.relu(x)
        return x

    def loss(self, params: Any, task: Any, key: jax.Array) -> jax.Array:
        """Loss on a fresh minibatch of the task."""
        x, y = self.fam.sample_sequence(task, key, self.batch_size)
        out = self.apply(params, x)
        if self.fam.num_classes is None:
            return jnp.mean((out[..., 0] - y) ** 2)
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
