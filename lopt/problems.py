"""Inner problems: a model trained by an optimizer on batches of one task of a `data` family."""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.lopt.models import MLP, InnerModel, parse_model
from metalearn.meta.local_updates import local_objective


class Problem(NamedTuple):
    """One inner problem: the model's parameters at initialization and what it learns."""

    params: Any
    task: ProblemTask


class ProblemTask(NamedTuple):
    data: Any  # the task of the data family
    scales: Any  # per tensor: the forward pass uses params * scale (1 without rescaling)
    batch: jax.Array  # examples per minibatch this episode (<= batch_size)


def per_example_loss(out: jax.Array, y: jax.Array, num_classes: int | None) -> jax.Array:
    """Squared error (regression) or cross-entropy (classification) per example."""
    if num_classes is None:
        return (out[..., 0] - y) ** 2
    return optax.softmax_cross_entropy_with_integer_labels(out, y)


@dataclasses.dataclass(frozen=True)
class InnerProblem:
    """A model (`lopt.models`: MLP, CNN, transformer) fit to one task of `family`, minibatches
    of `batch_size` examples drawn from the task. E.g. an MLP classifying one random projection
    of the digits with permuted labels, or a CNN classifying the digits' images.

    Augmentations drawn per episode, so one learned optimizer meets many problems:
    `rescale` r > 0 reparameterizes each tensor as params * s with log10 s uniform in [-r, r]
    (the function at init is unchanged; the optimizer sees parameters / s and gradients * s);
    `min_batch` > 0 averages the loss over a random b in [min_batch, batch_size] examples.
    """

    family: str = "projected:base=digits,dim=16"
    model: InnerModel = MLP()
    batch_size: int = 128
    rescale: float = 0.0
    min_batch: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"batch_size must be a positive int, got {self.batch_size}")
        if self.rescale < 0:
            raise UserError(f"rescale must be >= 0 (log10 range), got {self.rescale}")
        if not 0 <= self.min_batch <= self.batch_size:
            raise UserError(
                f"min_batch must be in [0, batch_size={self.batch_size}], got {self.min_batch}"
            )

    SEPARATOR: ClassVar[str] = "|"

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> InnerProblem:
        """`family|model|batch`: e.g. `projected:base=digits,dim=16|32x32|128` (an MLP of two
        hidden layers of 32), `images:base=digits|conv:8x16|128`; models as in `lopt.models`."""
        parts = spec.split(cls.SEPARATOR)
        try:
            if len(parts) != 3 or not re.fullmatch(r"\d+", parts[2]):
                raise ValueError
            batch = int(parts[2])
        except ValueError:
            raise UserError(
                f"an inner problem is 'family|model|batch' (e.g. "
                f"'projected:base=digits,dim=16|32x32|128'), got {spec!r}"
            ) from None
        return cls(parts[0], parse_model(parts[1]), batch, **kwargs)

    @property
    def spec(self) -> str:
        return f"{self.family}|{self.model.spec}|{self.batch_size}"

    @property
    def label(self) -> str:
        """A readable name, e.g. 'mlp[64] batch 128 on projected:base=digits,dim=16'."""
        kind, _, sizes = self.model.spec.rpartition(":")
        return f"{kind or 'mlp'}[{sizes}] batch {self.batch_size} on {self.family}"

    def augmented(self, rescale: float = 0.0, min_batch: int = 0) -> InnerProblem:
        """This problem with these augmentations (none by default); a `min_batch` above the
        batch size is the batch size, so one setting serves problems of every batch size."""
        return dataclasses.replace(self, rescale=rescale, min_batch=min(min_batch, self.batch_size))

    @functools.cached_property
    def fam(self) -> data.TaskFamily:
        return data.from_spec(self.family)

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Each input's shape: the family's image shape where it has one, else a vector."""
        return getattr(self.fam, "image_shape", (self.fam.input_dim,))

    @property
    def out_size(self) -> int:
        return self.fam.num_classes or 1

    def init(self, key: jax.Array) -> Problem:
        k_task, k_params, k_scale, k_batch = jax.random.split(key, 4)
        params = self.model.init(k_params, self.in_shape, self.out_size)
        leaves, tree = jax.tree_util.tree_flatten(params)
        logs = jax.random.uniform(k_scale, (len(leaves),), minval=-1, maxval=1) * self.rescale
        scales = tree.unflatten(list(10.0**logs))
        params = jax.tree_util.tree_map(jnp.divide, params, scales)
        lo = self.min_batch or self.batch_size
        batch = jax.random.randint(k_batch, (), lo, self.batch_size + 1)
        return Problem(params, ProblemTask(self.fam.sample_task(k_task), scales, batch))

    def apply(self, params: Any, x_BI: jax.Array) -> jax.Array:
        """The model's outputs for flattened inputs (as the family draws them)."""
        return self.model.apply(params, x_BI.reshape(x_BI.shape[0], *self.in_shape))

    def loss(self, params: Any, task: ProblemTask, key: jax.Array) -> jax.Array:
        """Loss on a fresh minibatch of the task."""
        x, y = self.fam.sample_sequence(task.data, key, self.batch_size)
        params = jax.tree_util.tree_map(jnp.multiply, params, task.scales)
        # one output, or (local updates) one per local block: the value is the model's loss
        outs = self.model.outputs(params, x.reshape(x.shape[0], *self.in_shape))
        losses = [self._mean(per_example_loss(o, y, self.fam.num_classes), task) for o in outs]
        return local_objective(losses)

    def _mean(self, per_example: jax.Array, task: ProblemTask) -> jax.Array:
        if not self.min_batch:
            return per_example.mean()
        keep = jnp.arange(self.batch_size) < task.batch
        return jnp.sum(jnp.where(keep, per_example, 0.0)) / task.batch


def is_problem_spec(spec: str) -> bool:
    """Whether `spec` names an inner problem (`family|model|batch`) rather than a task family
    (whose SPEC never holds the separator)."""
    return InnerProblem.SEPARATOR in spec
