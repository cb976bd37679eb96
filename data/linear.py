"""Regression on Gaussian inputs: linear regression (Garg et al. 2022; Raventos et al. 2023),
and the input shifts Garg et al. (Sec. 4) probe a trained learner with.

`GaussianInputs` holds what every such family shares: inputs x ~ N(0, I_dim), optionally
shifted, and y = f_task(x) + eps with eps ~ N(0, noise^2). The shifts (all off by default):

- `skew=a`: covariance with eigenvalues proportional to i^-a (i = 1..dim, scaled to trace
  dim) in a random orthonormal basis drawn once from the family's seed;
- `scale=s`: inputs multiplied by s;
- `orthant=true`: every input of a sequence in one random orthant (the query too: here every
  example is a later example's query);
- `orthogonal=true`: each of a sequence's first dim inputs orthogonal to all before it (a
  query orthogonal to its prompt, at budgets below dim; later inputs are unshifted).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from metalearn.core.errors import UserError
from metalearn.data.base import Kind, TaskFamily


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianInputs(TaskFamily):
    """A regression family on (optionally shifted) Gaussian inputs; subclasses give the task
    (`sample_task`) and its function (`target`)."""

    kind: ClassVar[Kind] = "regression"
    dim: int = 8
    noise: float = 0.5
    skew: float = 0.0
    scale: float = 1.0
    orthant: bool = False
    orthogonal: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1:
            raise UserError(f"{self.name} option dim must be a positive int, got {self.dim}")
        for opt, ok, allowed in (
            ("noise", self.noise >= 0, ">= 0"),
            ("skew", self.skew >= 0, ">= 0"),
            ("scale", self.scale > 0, "> 0"),
        ):
            if not ok:
                raise UserError(
                    f"{self.name} option {opt} must be {allowed}, got {getattr(self, opt)}"
                )
        if self.orthant and self.orthogonal:
            raise UserError(f"{self.name} options orthant and orthogonal exclude each other")

    @property
    def input_dim(self) -> int:
        return self.dim

    @abc.abstractmethod
    def target(self, task: Any, x_LD: jax.Array) -> jax.Array:
        """The task's noiseless targets y [L] of inputs x [L, D]."""

    def inputs(self, key: jax.Array, length: int) -> jax.Array:
        """x [length, dim]: N(0, I) with this family's shifts."""
        d = self.dim
        x_LD = jax.random.normal(key, (length, d))
        if self.skew > 0:
            basis_DD, _ = jnp.linalg.qr(
                jax.random.normal(jax.random.split(self.pool_key())[0], (d, d))
            )
            eig_D = jnp.arange(1, d + 1, dtype=jnp.float32) ** -self.skew
            x_LD = (x_LD * jnp.sqrt(eig_D * d / eig_D.sum())[None]) @ basis_DD.T
        if self.orthant:
            signs_D = jnp.where(
                jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, (d,)), 1.0, -1.0
            )
            x_LD = jnp.abs(x_LD) * signs_D[None]
        if self.orthogonal:
            k = min(length, d)
            # Q of the first k inputs (as columns, in order) is their Gram-Schmidt: column j
            # spans the part of x_j orthogonal to x_0..x_{j-1}; keep each input's norm
            q_DK, _ = jnp.linalg.qr(x_LD[:k].T)
            norms_K = jnp.linalg.norm(x_LD[:k], axis=-1)
            x_LD = x_LD.at[:k].set(q_DK.T * norms_K[:, None])
        return self.scale * x_LD

    def sample_sequence(
        self, task: Any, key: jax.Array, length: int
    ) -> tuple[jax.Array, jax.Array]:
        k_x, k_eps = jax.random.split(key)
        x_LD = self.inputs(k_x, length)
        y_L = self.target(task, x_LD) + self.noise * jax.random.normal(k_eps, (length,))
        return x_LD, y_L


@dataclasses.dataclass(frozen=True, kw_only=True)
class LinearRegression(GaussianInputs):
    """w ~ N(0, I_dim), y = w.x + eps."""

    name: ClassVar[str] = "linear_regression"

    def sample_task(self, key: jax.Array) -> jax.Array:
        return jax.random.normal(key, (self.dim,))

    def target(self, task: jax.Array, x_LD: jax.Array) -> jax.Array:
        return x_LD @ task
