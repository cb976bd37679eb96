"""GPICL's task family: random linear projections of a real dataset with permuted labels.

Kirsch, Harrison, Sohl-Dickstein & Metz (2022), sec. 3: each task draws a projection
A [dim, D_in] with A_ij ~ N(0, 1/D_in) and a random permutation of the labels.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.errors import UserError
from metalearn.data.base import Kind, TaskFamily
from metalearn.data.datasets import check_classes, load_normalized


@dataclasses.dataclass(frozen=True, kw_only=True)
class Projected(TaskFamily):
    """Tasks x' = A x, y' = perm(y) over a z-normalized base dataset.

    Options: base (a name, .npz or .parquet path), dim (projected size), num_classes (labels
    permuted among this many; must cover every label of the base), split (train or test),
    size (none: the base's own inputs; n: images made grayscale and resized to n x n first,
    GPICL's one input size for every dataset).
    """

    name: ClassVar[str] = "projected"
    kind: ClassVar[Kind] = "classification"
    base: str = "digits"
    dim: int = 32
    num_classes: int = 10  # type: ignore[assignment]
    split: str = "train"
    size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 1:
            raise UserError(f"projected option dim must be a positive int, got {self.dim}")
        if self.size is not None and self.size < 1:
            raise UserError(
                f"projected option size must be a positive int or none, got {self.size}"
            )
        if self.num_classes < 2:
            raise UserError(f"projected option num_classes must be >= 2, got {self.num_classes}")
        # z-normalized, so a projection with A_ij ~ N(0, 1/D_in) gives inputs of unit variance
        # on average
        x, y = load_normalized(self.base, self.split, self.size)
        check_classes(self.base, y, self.num_classes)
        # a family first built inside a jit trace must still hold concrete arrays
        with jax.ensure_compile_time_eval():
            object.__setattr__(self, "_x", jnp.asarray(x, jnp.float32))
            object.__setattr__(self, "_y", jnp.asarray(y, jnp.int32))

    @property
    def input_dim(self) -> int:
        return self.dim

    @property
    def base_size(self) -> tuple[int, int]:
        """(number of examples, flattened input size) of the base dataset."""
        return tuple(self._x.shape)  # type: ignore[return-value]

    def sample_task(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        k_a, k_p = jax.random.split(key)
        d_in = self._x.shape[1]
        a_ID = jax.random.normal(k_a, (d_in, self.dim)) / np.sqrt(d_in)
        perm = jax.random.permutation(k_p, self.num_classes).astype(jnp.int32)
        return a_ID, perm

    def sample_sequence(
        self, task: tuple[jax.Array, jax.Array], key: jax.Array, length: int
    ) -> tuple[jax.Array, jax.Array]:
        a_ID, perm = task
        idx = jax.random.randint(key, (length,), 0, self._x.shape[0])
        return self._x[idx] @ a_ID, perm[self._y[idx]]
