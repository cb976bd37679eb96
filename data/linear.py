"""Linear regression tasks: y = w.x + eps (Garg et al. 2022; Raventos et al. 2023)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from metalearn.core.errors import UserError
from metalearn.data.base import Kind, TaskFamily


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearRegression(TaskFamily):
    """x ~ N(0, I_dim), w ~ N(0, I_dim), y = w.x + eps with eps ~ N(0, noise^2)."""

    name: ClassVar[str] = "linear_regression"
    kind: ClassVar[Kind] = "regression"
    dim: int = 8
    noise: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1:
            raise UserError(f"linear_regression option dim must be a positive int, got {self.dim}")
        if self.noise < 0:
            raise UserError(f"linear_regression option noise must be >= 0, got {self.noise}")

    @property
    def input_dim(self) -> int:
        return self.dim

    def sample_task(self, key: jax.Array) -> jax.Array:
        return jax.random.normal(key, (self.dim,))

    def sample_sequence(
        self, task: jax.Array, key: jax.Array, length: int
    ) -> tuple[jax.Array, jax.Array]:
        k_x, k_eps = jax.random.split(key)
        x_LD = jax.random.normal(k_x, (length, self.dim))
        y_L = x_LD @ task + self.noise * jax.random.normal(k_eps, (length,))
        return x_LD, y_L
