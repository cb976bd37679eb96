"""GPICL's 'Random' tasks: a few random inputs with random labels, repeated within a sequence.

Nothing carries over between tasks, so a learner can only memorize within the sequence.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from metalearn.core.errors import UserError
from metalearn.data.base import Kind, TaskFamily


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomLabels(TaskFamily):
    """Each task: `items` inputs x ~ N(0, I_dim), each with a uniformly random label."""

    name: ClassVar[str] = "random"
    kind: ClassVar[Kind] = "classification"
    dim: int = 32
    num_classes: int = 10  # type: ignore[assignment]
    items: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        for opt in ("dim", "num_classes", "items"):
            if getattr(self, opt) < 1:
                raise UserError(
                    f"random option {opt} must be a positive int, got {getattr(self, opt)}"
                )

    @property
    def input_dim(self) -> int:
        return self.dim

    def sample_task(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_x, k_y = jax.random.split(key)
        x_ID = jax.random.normal(k_x, (self.items, self.dim))
        y_I = jax.random.randint(k_y, (self.items,), 0, self.num_classes)
        return x_ID, y_I

    def sample_sequence(
        self, task: tuple[jax.Array, jax.Array], key: jax.Array, length: int
    ) -> tuple[jax.Array, jax.Array]:
        x_ID, y_I = task
        idx = jax.random.randint(key, (length,), 0, self.items)
        return x_ID[idx], y_I[idx].astype(jnp.int32)
