"""The task-family protocol and the finite-pool mechanism every family shares.

A family draws one task from a key (`sample_task`) and one sequence of examples of a task
(`sample_sequence`); `sample` vmaps both. With `num_tasks=M` the tasks are a pool of seeds:
task i is drawn from `fold_in(pool_key, i)`, so even M = 2**24 materializes nothing.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
from typing import Any, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp

from metalearn.core.errors import UserError

Kind = Literal["classification", "regression"]
SUBSETS = ("all", "seen", "unseen")
MAX_POOL = 2**30  # pool indices and unseen indices must fit in int32


class Batch(NamedTuple):
    """Sequences of examples: `x [N, L, D]`, `y [N, L]`, and each sequence's pool index."""

    x: jax.Array
    y: jax.Array
    task_id: jax.Array  # [N] int32, -1 when the task lies outside any pool


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskFamily(abc.ABC):
    """A distribution over supervised tasks. Subclasses are frozen dataclasses of their options.

    Options shared by every family:
      num_tasks: None for a fresh task per sequence, or M for a fixed pool of M tasks.
      seed: the pool's seed (task i of the pool is `fold_in(key(seed), i)`).
      bias: fraction of sequences drawn from one fixed task (GPICL sec. 4.4 biases the
        training distribution this way to shorten the loss plateau).
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    num_tasks: int | None = None
    seed: int = 0
    bias: float = 0.0

    def __post_init__(self) -> None:
        if self.num_tasks is not None and not 1 <= self.num_tasks <= MAX_POOL:
            raise UserError(
                f"num_tasks must be a positive int up to {MAX_POOL} or none (unlimited), "
                f"got {self.num_tasks}"
            )
        if not 0.0 <= self.bias <= 1.0:
            raise UserError(f"bias must be a fraction in [0, 1], got {self.bias}")

    # -- what each family defines -------------------------------------------------------
    @property
    @abc.abstractmethod
    def input_dim(self) -> int:
        """Size of each input x_t."""

    @property
    def num_classes(self) -> int | None:
        """Number of labels for classification; None for regression."""
        return None

    @abc.abstractmethod
    def sample_task(self, key: jax.Array) -> Any:
        """One task (a pytree of arrays) drawn from `key`."""

    @abc.abstractmethod
    def sample_sequence(
        self, task: Any, key: jax.Array, length: int
    ) -> tuple[jax.Array, jax.Array]:
        """`length` examples of `task`: x [L, D] and y [L]."""

    # -- shared machinery ---------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The canonical SPEC string that rebuilds this family (`name:key=value,...`)."""
        from metalearn.data.spec import format_spec

        return format_spec(self)

    def pool_key(self) -> jax.Array:
        return jax.random.key(self.seed)

    def with_pool_size(self, size: jax.Array) -> TaskFamily:
        """This family with its pool's size given as an int32 array, e.g. traced when points of
        a sweep that differ only in their pool size train as one vmapped model. Task i of the
        pool stays the same task whatever the size; sampling draws the same numbers as with
        the Python int. Only for a finite pool (unlimited tasks sample differently), and only
        for sampling: the copy is not a valid spec."""
        if self.num_tasks is None:
            raise UserError(f"{self.spec!r} has unlimited tasks; it has no pool size to vary")
        twin = copy.copy(self)
        object.__setattr__(twin, "num_tasks", size)  # bypasses __post_init__'s int checks
        return twin

    def task_keys(self, key: jax.Array, num: int, subset: str) -> tuple[jax.Array, jax.Array]:
        """Keys of `num` tasks of `subset` and their pool indices (-1 outside the pool)."""
        if subset not in SUBSETS:
            raise UserError(f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
        pool_key = self.pool_key()
        if self.num_tasks is None:
            if subset != "all":
                raise UserError(
                    f"subset {subset!r} needs a finite pool (num_tasks); this family has "
                    "unlimited tasks, so use 'all'"
                )
            keys = jax.random.split(key, num)
            ids = jnp.full((num,), -1, jnp.int32)
        elif subset == "unseen":
            # indices >= M name tasks outside the pool: distinct from every pool task.
            idx = jax.random.randint(key, (num,), self.num_tasks, MAX_POOL * 2 - 1, jnp.int32)
            keys = jax.vmap(jax.random.fold_in, (None, 0))(pool_key, idx)
            ids = jnp.full((num,), -1, jnp.int32)
        else:  # 'seen' and 'all' both draw from the pool
            ids = jax.random.randint(key, (num,), 0, self.num_tasks, jnp.int32)
            keys = jax.vmap(jax.random.fold_in, (None, 0))(pool_key, ids)
        return keys, ids

    def sample(
        self, key: jax.Array, num_sequences: int, length: int, subset: str | None = None
    ) -> Batch:
        """Draw `num_sequences` sequences of `length` examples, one task each.

        `subset=None` is the training distribution (the pool, or fresh tasks, with `bias`);
        evaluation asks for 'seen' or 'unseen' tasks of a pool, or 'all' tasks, unbiased.
        """
        if num_sequences < 1 or length < 1:
            raise UserError(
                f"num_sequences and length must be positive, got {num_sequences} and {length}"
            )
        k_task, k_seq, k_bias = jax.random.split(key, 3)
        task_keys, ids = self.task_keys(k_task, num_sequences, subset or "all")
        if subset is None and self.bias > 0.0:
            fixed = jax.random.bernoulli(k_bias, self.bias, (num_sequences,))
            pinned = jax.random.key_data(jax.random.fold_in(self.pool_key(), 0))
            data = jnp.where(fixed[:, None], pinned, jax.random.key_data(task_keys))
            task_keys = jax.random.wrap_key_data(data)
            ids = jnp.where(fixed, -1 if self.num_tasks is None else 0, ids)
        tasks = jax.vmap(self.sample_task)(task_keys)
        seq_keys = jax.random.split(k_seq, num_sequences)
        x, y = jax.vmap(self.sample_sequence, (0, 0, None))(tasks, seq_keys, length)
        return Batch(x, y, ids)
