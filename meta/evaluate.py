"""One evaluation API: a learner's metric versus adaptation budget on a task family.

A family measures budgets in one of two units (its `budget_unit`):
- "examples" (a `data` task family): budget k means the learner has seen k labelled examples
  of a task and predicts example k+1 (index k). The learner offers
  `prepare(family, length, budgets, key) -> predict(x [N, L, D], y [N, L]) -> [N, len(budgets)]`.
- "steps" (an inner training problem, e.g. `lopt.InnerProblem`): budget k means k optimizer
  steps from a fresh problem; the metric is the training loss after them. The learner offers
  `prepare(problem, steps, budgets, key) -> losses(keys [N]) -> [N, len(budgets)]`, run i
  drawing its task, initialization and batches from keys[i].

Meta-trained models and baselines fill the same slot, and say which units they accept.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.errors import UserError

CHUNK = 512  # most sequences drawn per key (bounds memory; fixed, so results are repeatable)
SCHEMA = 1

Predict = Callable[[jax.Array, jax.Array], jax.Array]  # examples: (x, y) -> predictions
RunLosses = Callable[[jax.Array], jax.Array]  # steps: run keys -> losses at the budgets


class Learner(Protocol):
    """Anything that can produce a learning curve."""

    name: str
    budget_units: tuple[str, ...]  # the families it applies to: "examples", "steps"

    def prepare(
        self, family: Any, length: int, budgets: Sequence[int], key: jax.Array
    ) -> Predict | RunLosses:
        """Check the learner applies to `family` (else raise UserError), tune what it tunes
        (on tasks drawn from `key`, never the evaluation tasks), and return its predictor
        (examples) or its runs (steps)."""
        ...


@dataclasses.dataclass(frozen=True)
class Curve:
    """Mean and standard error of a metric at each budget, for one learner, family, subset."""

    learner: str
    family: str
    metric: str  # "accuracy" or "mse"
    budget_unit: str
    budget: tuple[int, ...]
    mean: tuple[float, ...]
    stderr: tuple[float, ...]
    num_sequences: int
    seed: int
    subset: str  # "seen" | "unseen" | "all"
    per_sequence: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_record(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "learner": self.learner,
            "family": self.family,
            "metric": self.metric,
            "budget_unit": self.budget_unit,
            "budget": list(self.budget),
            "mean": [_finite(v) for v in self.mean],
            "stderr": [_finite(v) for v in self.stderr],
            "num_sequences": self.num_sequences,
            "seed": self.seed,
            "subset": self.subset,
        }


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None  # JSON has no NaN


@dataclasses.dataclass(frozen=True)
class Curves:
    """The curves of one or more evaluations."""

    curves: tuple[Curve, ...]

    def __iter__(self) -> Iterator[Curve]:
        return iter(self.curves)

    def __len__(self) -> int:
        return len(self.curves)

    def __add__(self, other: Curves) -> Curves:
        return Curves(self.curves + other.curves)

    def get(
        self, subset: str | None = None, learner: str | None = None, family: str | None = None
    ) -> Curve:
        """The single curve matching the given subset, learner and family."""
        found = [
            c
            for c in self.curves
            if subset in (None, c.subset)
            and learner in (None, c.learner)
            and family in (None, c.family)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} curves match {subset=}, {learner=}, {family=}")
        return found[0]

    def to_records(self) -> list[dict[str, Any]]:
        return [c.to_record() for c in self.curves]


def check_budgets(budgets: Sequence[int], length: int | None) -> tuple[tuple[int, ...], int]:
    """Validated budgets (sorted, unique) and the sequence length to evaluate at."""
    budgets = tuple(sorted({int(b) for b in budgets}))
    if not budgets or budgets[0] < 0:
        raise UserError(f"budgets must be non-negative integers, got {list(budgets)}")
    length = budgets[-1] + 1 if length is None else int(length)
    if length < 1:
        raise UserError(f"length must be a positive int, got {length}")
    if budgets[-1] >= length:
        raise UserError(
            f"budget {budgets[-1]} needs sequences longer than {length} examples; "
            f"budgets must be below the length (0..{length - 1})"
        )
    return budgets, length


def evaluate(
    learner: Learner,
    family: Any,
    budgets: Sequence[int],
    num_sequences: int,
    key: jax.Array,
    *,
    length: int | None = None,
    seed: int | None = None,
) -> Curves:
    """Learning curves of `learner` on `family`: one for 'all' tasks, or, when the family has a
    finite pool, one each for 'seen' (pool) and 'unseen' tasks.

    Every learner evaluated with the same key sees the same sequences, so curves can be
    compared sequence by sequence (`Curve.per_sequence`).
    """
    if num_sequences < 2:
        raise UserError(
            f"num_sequences must be at least 2 (for a standard error), got {num_sequences}"
        )
    unit = family.budget_unit
    if unit not in learner.budget_units:
        raise UserError(
            f"learner {learner.name!r} takes budgets in {' or '.join(learner.budget_units)}, "
            f"but {family.spec!r} counts {unit}"
        )
    if unit == "steps":
        return _evaluate_steps(learner, family, budgets, num_sequences, key, length, seed)
    budgets, length = check_budgets(budgets, length)
    k_tune, k_eval = jax.random.split(key)
    predict = learner.prepare(family, length, budgets, k_tune)
    metric = "mse" if family.num_classes is None else "accuracy"
    subsets = ("seen", "unseen") if family.num_tasks is not None else ("all",)
    out = []
    for i, subset in enumerate(subsets):
        values = _per_sequence(
            predict,
            family,
            budgets,
            num_sequences,
            length,
            subset,
            jax.random.fold_in(k_eval, i),
            metric,
        )
        mean = values.mean(0)
        stderr = values.std(0, ddof=1) / np.sqrt(len(values))
        out.append(
            Curve(
                learner.name,
                family.spec,
                metric,
                "examples",
                budgets,
                tuple(map(float, mean)),
                tuple(map(float, stderr)),
                num_sequences,
                -1 if seed is None else seed,
                subset,
                values,
            )
        )
    return Curves(tuple(out))


def _evaluate_steps(learner, problem, budgets, num_runs, key, steps, seed) -> Curves:
    """Training loss after each budget of steps, over `num_runs` runs of the problem."""
    budgets = tuple(sorted({int(b) for b in budgets}))
    if not budgets or budgets[0] < 0:
        raise UserError(f"budgets must be non-negative integers, got {list(budgets)}")
    steps = budgets[-1] if steps is None else int(steps)
    if budgets[-1] > steps:
        raise UserError(f"budget {budgets[-1]} is beyond the {steps} steps of training")
    k_tune, k_eval = jax.random.split(key)
    losses = learner.prepare(problem, steps, budgets, k_tune)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(k_eval, jnp.arange(num_runs))
    values = np.concatenate(
        [np.asarray(losses(keys[i : i + CHUNK]), np.float64) for i in range(0, num_runs, CHUNK)]
    )
    curve = Curve(
        learner.name,
        problem.spec,
        "loss",
        "steps",
        budgets,
        tuple(map(float, values.mean(0))),
        tuple(map(float, values.std(0, ddof=1) / np.sqrt(len(values)))),
        num_runs,
        -1 if seed is None else seed,
        "all",
        values,
    )
    return Curves((curve,))


def _per_sequence(predict, family, budgets, num, length, subset, key, metric) -> np.ndarray:
    idx = jnp.asarray(budgets)
    rows = []
    chunk = min(CHUNK, num)
    for c in range(math.ceil(num / chunk)):
        batch = family.sample(jax.random.fold_in(key, c), chunk, length, subset)
        pred = predict(batch.x, batch.y)
        target = batch.y[:, idx]
        if metric == "mse":
            rows.append(np.asarray((pred - target) ** 2, np.float64))
        else:
            rows.append(np.asarray(pred == target, np.float64))
    return np.concatenate(rows)[:num]
