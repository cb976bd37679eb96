"""Bursty few-shot sequences over many classes (Chan et al. 2022, "Data Distributional
Properties Drive Emergent In-Context Learning in Transformers"; Singh et al. 2023, "The
Transient Nature of Emergent In-Context Learning").

Classes are synthetic by default: class c has a prototype drawn from the family's seed, and its
examples are the prototype plus Gaussian noise. With `base` a dataset (a name such as `mnist`,
or a `.npz` with arrays x and y, e.g. an Omniglot background set: its characters are the
classes), class c is the dataset's c-th label: its examples are its images, z-normalized, in
one random projection to `dim` fixed by the seed, plus the noise; the last `heldout` of the
classes + heldout labels used are the held-out ones.

A sequence has `length` examples; the last is the query, the others its context, in random
order. Three modes:

- `train`: the query's class is drawn from a Zipf law over the `classes` training classes
  (p(c) proportional to (c+1)^-zipf); with probability `burstiness` the sequence is bursty:
  `burst` context examples share the query's class and the rest share one distractor class;
  otherwise every context class is drawn from the Zipf law. Labels are fixed per class
  (class c -> a label drawn once from the seed), so they can be learned in the weights.
- `fewshot` (in-context evaluation): query and distractor from `heldout` classes never
  trained on, given two fresh distinct labels per sequence: only the context tells them.
- `absent` (in-weights evaluation): training classes with their fixed labels, the query's
  class never in the context: only the weights tell it.

A task is a sequence's class assignment (its classes and labels); with `num_tasks=M` a pool
of M such assignments repeats, as in every family.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.errors import UserError
from metalearn.data.base import Kind, TaskFamily
from metalearn.data.datasets import load_normalized

MODES = ("train", "fewshot", "absent")
SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bursty(TaskFamily):
    """Zipf-distributed, bursty few-shot classification of synthetic Gaussian classes, or of a
    dataset's classes (`base`)."""

    name: ClassVar[str] = "bursty"
    kind: ClassVar[Kind] = "classification"
    dim: int = 32
    classes: int = 1600
    heldout: int = 100
    num_classes: int = 32  # type: ignore[assignment]
    noise: float = 0.1
    zipf: float = 0.0
    burstiness: float = 0.9
    burst: int = 3
    mode: str = "train"
    base: str = SYNTHETIC
    split: str = "train"

    def __post_init__(self) -> None:
        super().__post_init__()
        for opt in ("dim", "classes", "heldout", "burst"):
            if getattr(self, opt) < 1:
                raise UserError(
                    f"bursty option {opt} must be a positive int, got {getattr(self, opt)}"
                )
        if self.classes < 2 or self.heldout < 2:
            raise UserError(
                f"bursty needs classes >= 2 and heldout >= 2, got {self.classes} and {self.heldout}"
            )
        if self.num_classes < 2:
            raise UserError(
                f"bursty option num_classes (labels) must be >= 2, got {self.num_classes}"
            )
        if self.noise < 0 or self.zipf < 0:
            raise UserError(
                f"bursty options noise and zipf must be >= 0, got {self.noise} and {self.zipf}"
            )
        if not 0.0 <= self.burstiness <= 1.0:
            raise UserError(f"bursty option burstiness must be in [0, 1], got {self.burstiness}")
        if self.mode not in MODES:
            raise UserError(
                f"bursty option mode must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if self.base != SYNTHETIC:
            self._load_classes()

    def _load_classes(self) -> None:
        """The dataset's images (z-normalized) and, per class, the indices of its images."""
        x, y = load_normalized(self.base, self.split)
        labels, rank = np.unique(y, return_inverse=True)
        need = self.classes + self.heldout
        if len(labels) < need:
            raise UserError(
                f"bursty base {self.base!r} has {len(labels)} classes; classes + heldout = "
                f"{need} must fit in them"
            )
        counts = np.bincount(rank, minlength=len(labels))[:need]
        table = np.zeros((need, counts.max()), np.int32)
        for c in range(need):
            found = np.flatnonzero(rank == c)
            table[c, : len(found)] = found
        # a family first built inside a jit trace must still hold concrete arrays
        with jax.ensure_compile_time_eval():
            object.__setattr__(self, "_x", jnp.asarray(x, jnp.float32))
            object.__setattr__(self, "_images", jnp.asarray(table))
            object.__setattr__(self, "_counts", jnp.asarray(counts, jnp.int32))

    @property
    def input_dim(self) -> int:
        return self.dim

    def _keys(self) -> tuple[jax.Array, jax.Array]:
        """The seed's prototype and fixed-label keys (apart from the pool's task keys)."""
        k_proto, k_label = jax.random.split(jax.random.split(self.pool_key())[1])
        return k_proto, k_label

    def fixed_label(self, c: jax.Array) -> jax.Array:
        """The label of training class c (drawn once from the seed)."""
        return jax.random.randint(jax.random.fold_in(self._keys()[1], c), (), 0, self.num_classes)

    def zipf_classes(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Training classes drawn from the Zipf law, by inverse CDF: O(log classes) a draw,
        where Gumbel-max sampling would draw `classes` numbers for each."""
        weights = jnp.arange(1, self.classes + 1, dtype=jnp.float32) ** -self.zipf
        cdf = jnp.cumsum(weights)
        u = jax.random.uniform(key, shape, maxval=cdf[-1])
        return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), self.classes - 1).astype(
            jnp.int32
        )

    def sample_task(self, key: jax.Array) -> jax.Array:
        """The key of a sequence's class assignment: the classes and labels depend on the
        length asked for (the query is the last example), so `sample_sequence` draws them
        from it (`assignment`), and the sequence key draws the examples' noise."""
        return key

    def assignment(self, key: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
        """Class [length] and label [length] of each position, the query last."""
        k_q, k_d, k_ctx, k_burst, k_lab, k_perm = jax.random.split(key, 6)
        ctx = length - 1
        slots = jnp.arange(ctx) < min(self.burst, ctx)  # a burst: the query's class
        if self.mode == "fewshot":
            q, d = self.classes + jax.random.choice(k_q, self.heldout, (2,), replace=False)
            fresh = jax.random.choice(k_lab, self.num_classes, (2,), replace=False)
            context = jnp.where(slots, q, d)
            labels_of = lambda c: jnp.where(c == q, fresh[0], fresh[1])  # noqa: E731
        else:
            q = self.zipf_classes(k_q, ())
            iid = self.zipf_classes(k_ctx, (ctx,))
            if self.mode == "absent":
                # the query's class never in the context: a draw equal to it moves to the next
                context = jnp.where(iid == q, (iid + 1) % self.classes, iid)
            else:
                d = self.zipf_classes(k_d, ())
                d = jnp.where(d == q, (d + 1) % self.classes, d)  # the distractor is another
                bursty = jax.random.bernoulli(k_burst, self.burstiness)
                context = jnp.where(bursty, jnp.where(slots, q, d), iid)
            labels_of = jax.vmap(self.fixed_label)
        context = context[jax.random.permutation(k_perm, ctx)]
        cls = jnp.concatenate([context, q[None]]).astype(jnp.int32)
        return cls, labels_of(cls).astype(jnp.int32)

    def sample_sequence(
        self, task: jax.Array, key: jax.Array, length: int
    ) -> tuple[jax.Array, jax.Array]:
        cls, lab = self.assignment(task, length)
        k_proto, _ = self._keys()
        if self.base != SYNTHETIC:
            k_pick, k_noise = jax.random.split(key)
            pick = jax.random.randint(k_pick, (length,), 0, self._counts[cls])
            d_in = self._x.shape[1]
            proj_ID = jax.random.normal(jax.random.split(k_proto)[1], (d_in, self.dim))
            x_LD = self._x[self._images[cls, pick]] @ proj_ID / np.sqrt(d_in)
            return x_LD + self.noise * jax.random.normal(k_noise, (length, self.dim)), lab
        protos = jax.vmap(lambda c: jax.random.normal(jax.random.fold_in(k_proto, c), (self.dim,)))(
            cls
        )
        x_LD = protos + self.noise * jax.random.normal(key, (length, self.dim))
        return x_LD, lab
