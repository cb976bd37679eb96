"""Images of a real dataset as they are, with the labels permuted per task.

GPICL's permuted-label tasks without the projection (Kirsch et al. 2022, sec. 3): every task
shares the inputs and differs in which label each class carries. Models that read images (the
CNN and transformer inner problems of `lopt`) need this family's `image_shape`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from metalearn.core.errors import UserError
from metalearn.data.base import Kind, TaskFamily
from metalearn.data.datasets import check_classes, image_shape, load_normalized


@dataclasses.dataclass(frozen=True, kw_only=True)
class Images(TaskFamily):
    """Tasks x' = x (z-normalized, flattened channels-last), y' = perm(y).

    Options: base (a name, .npz or .parquet path of square images with 1 or 3 channels),
    num_classes (labels permuted among this many), split (train or test), permute (false: every
    task is the base dataset with its own labels).
    """

    name: ClassVar[str] = "images"
    kind: ClassVar[Kind] = "classification"
    base: str = "digits"
    num_classes: int = 10  # type: ignore[assignment]
    split: str = "train"
    permute: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 2:
            raise UserError(f"images option num_classes must be >= 2, got {self.num_classes}")
        x, y = load_normalized(self.base, self.split)
        check_classes(self.base, y, self.num_classes)
        shape = image_shape(x.shape[1])
        if shape is None:
            raise UserError(
                f"base {self.base!r} has inputs of {x.shape[1]} values, not a square image "
                "with 1 or 3 channels (side*side or side*side*3)"
            )
        object.__setattr__(self, "_shape", shape)
        with jax.ensure_compile_time_eval():  # concrete even when first built inside a trace
            object.__setattr__(self, "_x", jnp.asarray(x, jnp.float32))
            object.__setattr__(self, "_y", jnp.asarray(y, jnp.int32))

    @property
    def input_dim(self) -> int:
        return int(self._x.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of each input; x is this image flattened."""
        return self._shape

    def sample_task(self, key: jax.Array) -> jax.Array:
        if not self.permute:
            return jnp.arange(self.num_classes, dtype=jnp.int32)
        return jax.random.permutation(key, self.num_classes).astype(jnp.int32)

    def sample_sequence(
        self, task: jax.Array, key: jax.Array, length: int
    ) -> tuple[jax.Array, jax.Array]:
        idx = jax.random.randint(key, (length,), 0, self._x.shape[0])
        return self._x[idx], task[self._y[idx]]
