"""Garg, Tsipras, Liang & Valiant (2022)'s function classes beyond dense linear functions, on
the shared Gaussian inputs and their shifts (`data.linear.GaussianInputs`): sparse linear
functions, two-layer ReLU networks and decision trees. Their defaults are the paper's (dim 20,
no noise)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from metalearn.core.errors import UserError
from metalearn.data.linear import GaussianInputs


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparseLinear(GaussianInputs):
    """w ~ N(0, I_dim) on `sparsity` coordinates drawn uniformly, zero elsewhere; y = w.x."""

    name: ClassVar[str] = "sparse_linear"
    dim: int = 20
    noise: float = 0.0
    sparsity: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.sparsity <= self.dim:
            raise UserError(
                f"sparse_linear option sparsity must be in 1..dim ({self.dim}), got {self.sparsity}"
            )

    def sample_task(self, key: jax.Array) -> jax.Array:
        k_w, k_support = jax.random.split(key)
        keep = jax.random.permutation(k_support, self.dim) < self.sparsity
        return jax.random.normal(k_w, (self.dim,)) * keep

    def target(self, task: jax.Array, x_LD: jax.Array) -> jax.Array:
        return x_LD @ task


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReluNet(GaussianInputs):
    """y = sum_i a_i relu(w_i.x) over `hidden` units, w_i ~ N(0, I_dim), a_i ~ N(0, 2/hidden)."""

    name: ClassVar[str] = "relu_net"
    dim: int = 20
    noise: float = 0.0
    hidden: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden < 1:
            raise UserError(f"relu_net option hidden must be a positive int, got {self.hidden}")

    def sample_task(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_w, k_a = jax.random.split(key)
        w_HD = jax.random.normal(k_w, (self.hidden, self.dim))
        a_H = jax.random.normal(k_a, (self.hidden,)) * jnp.sqrt(2.0 / self.hidden)
        return w_HD, a_H

    def target(self, task: tuple[jax.Array, jax.Array], x_LD: jax.Array) -> jax.Array:
        w_HD, a_H = task
        return jax.nn.relu(x_LD @ w_HD.T) @ a_H


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecisionTree(GaussianInputs):
    """A full binary tree of `depth`: each inner node tests one coordinate, drawn uniformly,
    against 0 (x_i > 0 goes right); leaf values ~ N(0, 1)."""

    name: ClassVar[str] = "decision_tree"
    dim: int = 20
    noise: float = 0.0
    depth: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.depth <= 12:
            raise UserError(f"decision_tree option depth must be in 1..12, got {self.depth}")

    def sample_task(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_f, k_v = jax.random.split(key)
        inner = 2**self.depth - 1
        return (
            jax.random.randint(k_f, (inner,), 0, self.dim),
            jax.random.normal(k_v, (inner + 1,)),
        )

    def target(self, task: tuple[jax.Array, jax.Array], x_LD: jax.Array) -> jax.Array:
        feature_N, leaf_V = task

        def one(x_D):
            node = jnp.int32(0)  # heap order: node n's children are 2n+1 and 2n+2
            for _ in range(self.depth):
                node = 2 * node + 1 + (x_D[feature_N[node]] > 0).astype(jnp.int32)
            return leaf_V[node - len(feature_N)]

        return jax.vmap(one)(x_LD)
