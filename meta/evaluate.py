"""One evaluation API: a learner's metric versus adaptation budget, in one of two settings the
backbone declares as protocols and the plug-ins satisfy structurally:

- an `ExampleFamily` (a `metalearn.data` task family) with a `Predictor`: budget k means the
  learner has seen k labelled examples of a task and predicts example k+1 (index k). The
  predictor returns `Predictions`: the predicted label or target at every budget, and, for
  classification, log-probabilities when it has them, so one evaluation reports several
  metrics (`METRICS`: accuracy, squared error, and from the probabilities negative
  log-likelihood, the Brier score and the expected calibration error).
- a `TrainingProblem` (an inner problem, e.g. `metalearn.lopt.InnerProblem`) with a
  `StepLearner`: budget k means k optimizer steps from a fresh problem; the metric is the
  training loss after them, run i drawing its task, initialization and batches from keys[i].

Meta-trained models and baselines fill the same slots; a learner of both kinds (an optimizer,
which trains an inner problem or an MLP on the examples seen) implements both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from metalearn.core.errors import UserError

CHUNK = 512  # most sequences drawn per key (bounds memory; fixed, so results are repeatable)
SCHEMA = 1


class Predictions(NamedTuple):
    """A predictor's output on sequences x [N, L, D], y [N, L] at budgets [B]."""

    value: jax.Array  # [N, B]: the predicted label (classification) or target (regression)
    log_probs: jax.Array | None = None  # [N, B, C]: log-probabilities of the labels, if known


Predict = Callable[[jax.Array, jax.Array], Predictions]
RunLosses = Callable[[jax.Array], jax.Array]  # run keys [N] -> training losses [N, B]


@runtime_checkable
class ExampleFamily(Protocol):
    """Sequences of labelled examples of tasks, optionally from a finite pool."""

    spec: str
    num_classes: int | None  # None for regression
    num_tasks: int | None  # None: unlimited tasks

    def sample(self, key: jax.Array, num_sequences: int, length: int, subset: str | None) -> Any:
        """A batch with x [N, L, D] and y [N, L]."""
        ...


@runtime_checkable
class TrainingProblem(Protocol):
    """An inner training problem: a fresh model and task per key, and its loss."""

    spec: str

    def init(self, key: jax.Array) -> Any: ...

    def loss(self, params: Any, task: Any, key: jax.Array) -> jax.Array: ...


@runtime_checkable
class Predictor(Protocol):
    """A learner of examples in context (or by training on the examples seen)."""

    name: str

    def predictor(
        self, family: ExampleFamily, length: int, budgets: tuple[int, ...], key: jax.Array
    ) -> Predict:
        """Check the learner applies to `family` (else raise UserError), tune what it tunes
        (on tasks drawn from `key`, never the evaluation tasks), and return its predictor."""
        ...


@runtime_checkable
class StepLearner(Protocol):
    """A learner that trains an inner problem step by step (an optimizer)."""

    name: str

    def step_losses(
        self, problem: TrainingProblem, budgets: tuple[int, ...], key: jax.Array
    ) -> RunLosses:
        """Tune what it tunes (on runs drawn from `key`) and return its runs."""
        ...


Learner = Predictor | StepLearner


def accuracy(pred: Predictions, y: jax.Array) -> jax.Array:
    return (pred.value == y).astype(jnp.float32)


def squared_error(pred: Predictions, y: jax.Array) -> jax.Array:
    return (pred.value - y) ** 2


def nll(pred: Predictions, y: jax.Array) -> jax.Array:
    """Negative log-likelihood of the true label (classification with log-probabilities)."""
    return -jnp.take_along_axis(pred.log_probs, y[..., None], -1)[..., 0]


def brier(pred: Predictions, y: jax.Array) -> jax.Array:
    """The Brier score of one query: the squared distance between the predicted distribution
    and the one-hot true label, summed over the classes (Brier 1950; 0 is perfect, 2 worst)."""
    probs = jnp.exp(pred.log_probs)
    return jnp.sum((probs - jax.nn.one_hot(y, probs.shape[-1])) ** 2, -1)


ECE_BINS = 15  # equal-width confidence bins, as Guo et al. 2017 use
ECE_RESAMPLES = 200  # bootstrap resamples of the sequences for the ECE's standard error


def calibration_gaps(pred: Predictions, y: jax.Array, bins: int = ECE_BINS) -> jax.Array:
    """[..., bins] per query: its top-label confidence minus its correctness, placed in the
    bin of that confidence (zeros elsewhere). Summed over queries, each bin's entry is the
    bin's count times its confidence-accuracy gap, so the expected calibration error is
    sum_bins |sum_queries gaps| / queries (`expected_calibration_error`)."""
    probs = jnp.exp(pred.log_probs)
    confidence = probs.max(-1)
    correct = (probs.argmax(-1) == y).astype(confidence.dtype)
    which = jnp.minimum((confidence * bins).astype(jnp.int32), bins - 1)
    return jax.nn.one_hot(which, bins) * (confidence - correct)[..., None]


def expected_calibration_error(gaps: np.ndarray) -> np.ndarray:
    """[B] the top-label expected calibration error (Naeini et al. 2015; Guo et al. 2017) at
    each budget, from per-query `calibration_gaps` [N, B, bins]: the bins' absolute
    confidence-accuracy gaps weighted by their share of the N queries."""
    return _ece_of_sums(gaps.sum(0), len(gaps))


def _ece_of_sums(sums: np.ndarray, n: float) -> np.ndarray:
    """The ECE from per-bin sums of n queries' gaps [..., bins]."""
    return np.abs(sums).sum(-1) / n


# metric -> (per-query value from predictions and targets, whether it needs log-probabilities)
METRICS: dict[str, tuple[Callable[[Predictions, jax.Array], jax.Array], bool]] = {
    "accuracy": (accuracy, False),
    "mse": (squared_error, False),
    "nll": (nll, True),
    "brier": (brier, True),
    "ece": (calibration_gaps, True),
}
CLASSIFICATION_METRICS = ("accuracy", "nll", "brier", "ece")
PROBABILITY_METRICS = tuple(m for m, (_, needs) in METRICS.items() if needs)


@dataclasses.dataclass(frozen=True)
class Curve:
    """Mean and standard error of a metric at each budget, for one learner, family, subset."""

    learner: str
    family: str
    metric: str  # a key of METRICS ("accuracy", "mse", "nll", "brier", "ece"), or a distance
    budget_unit: str
    budget: tuple[int, ...]
    mean: tuple[float, ...]
    stderr: tuple[float, ...]
    num_sequences: int
    seed: int
    subset: str  # "seen" | "unseen" | "all"
    per_sequence: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Curve:
        """A curve from `to_record`'s dict (a missing value, stored as null, reads as NaN)."""
        if record.get("schema") != SCHEMA:
            raise ValueError(f"schema {record.get('schema')!r}, expected {SCHEMA}")
        nan = lambda xs: tuple(float("nan") if v is None else v for v in xs)  # noqa: E731
        return cls(
            record["learner"],
            record["family"],
            record["metric"],
            record["budget_unit"],
            tuple(record["budget"]),
            nan(record["mean"]),
            nan(record["stderr"]),
            record["num_sequences"],
            record["seed"],
            record["subset"],
        )

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
        self,
        subset: str | None = None,
        learner: str | None = None,
        family: str | None = None,
        metric: str | None = None,
    ) -> Curve:
        """The single curve matching the given subset, learner, family and metric."""
        found = [
            c
            for c in self.curves
            if subset in (None, c.subset)
            and learner in (None, c.learner)
            and family in (None, c.family)
            and metric in (None, c.metric)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} curves match {subset=}, {learner=}, {family=}, {metric=}")
        return found[0]

    def to_records(self) -> list[dict[str, Any]]:
        return [c.to_record() for c in self.curves]


def check_budgets(
    budgets: Sequence[int], below: int | None = None, bound: str = "the length"
) -> tuple[int, ...]:
    """Budgets sorted and unique, each a non-negative int, and below `below` when given
    (`bound` names that limit in the error)."""
    try:
        budgets = tuple(sorted({int(b) for b in budgets}))
    except (TypeError, ValueError):
        raise UserError(f"budgets must be non-negative integers, got {list(budgets)}") from None
    if not budgets or budgets[0] < 0:
        raise UserError(f"budgets must be non-negative integers, got {list(budgets)}")
    if below is not None and budgets[-1] >= below:
        raise UserError(
            f"budget {budgets[-1]} is out of range: budgets must be below {bound} ({below}), "
            f"so 0..{below - 1}"
        )
    return budgets


def evaluate(
    learner: Learner,
    family: ExampleFamily | TrainingProblem,
    budgets: Sequence[int],
    num_sequences: int,
    key: jax.Array,
    *,
    length: int | None = None,
    seed: int | None = None,
    metrics: Sequence[str] | None = None,
) -> Curves:
    """Learning curves of `learner` on `family`.

    On a task family: one curve per metric for 'all' tasks, or, when the family has a finite
    pool, for 'seen' (pool) and 'unseen' tasks; sequences are `length` examples long (default:
    the largest budget + 1). The default metrics are squared error for regression; accuracy
    for classification, and where the learner gives probabilities also the negative
    log-likelihood, the Brier score and the expected calibration error (`ECE_BINS` bins; its
    standard error is a bootstrap over the sequences, drawn from `key`). Asking for a
    probability metric of a learner without probabilities is an error.

    On an inner problem: the training loss after each budget of steps over `num_sequences`
    runs (`length` does not apply: the largest budget is the run).

    Every learner evaluated with the same key sees the same sequences (or runs), so curves
    can be compared sequence by sequence (`Curve.per_sequence`).
    """
    if num_sequences < 2:
        raise UserError(
            f"num_sequences must be at least 2 (for a standard error), got {num_sequences}"
        )
    if isinstance(family, TrainingProblem):
        if not isinstance(learner, StepLearner):
            raise UserError(
                f"learner {learner.name!r} does not train inner problems; {family.spec!r} is "
                "one (budgets count optimizer steps)"
            )
        if length is not None or metrics is not None:
            raise UserError(
                "length and metrics apply to task families; on an inner problem the largest "
                "budget is the number of steps and the metric is the training loss"
            )
        return _evaluate_steps(learner, family, check_budgets(budgets), num_sequences, key, seed)
    budgets, length = example_setting(learner, family, budgets, length)
    regression = family.num_classes is None
    asked = metrics is not None
    metrics = tuple(metrics) if asked else ("mse",) if regression else CLASSIFICATION_METRICS
    allowed = ("mse",) if regression else CLASSIFICATION_METRICS
    for m in metrics:
        if m not in allowed:
            kind = "regression" if regression else "classification"
            raise UserError(f"metric {m!r} does not apply to {kind}; choose from {allowed}")
    k_tune, k_eval = jax.random.split(key)
    predict = learner.predictor(family, length, budgets, k_tune)
    out = []
    for i, subset in enumerate(subsets_of(family)):
        values = _per_sequence(
            learner.name,
            predict,
            family,
            budgets,
            num_sequences,
            length,
            subset,
            jax.random.fold_in(k_eval, i),
            metrics,
            optional=() if asked else PROBABILITY_METRICS,
        )
        for metric, per in values.items():
            setting = (learner.name, family.spec, metric, "examples", budgets, per, seed, subset)
            if metric == "ece":
                # chunk c of this subset draws from fold_in(., c): below 102,400 sequences
                # no chunk reaches c = 200, so the bootstrap's key is not a data key
                k_boot = jax.random.fold_in(jax.random.fold_in(k_eval, i), ECE_RESAMPLES)
                out.append(ece_curve(*setting, key=k_boot))
            else:
                out.append(curve_of(*setting))
    return Curves(tuple(out))


def ece_curve(learner, spec, metric, unit, budgets, gaps, seed, subset, *, key) -> Curve:
    """The expected calibration error at each budget from per-query gaps [N, B, bins], with
    the standard deviation over `ECE_RESAMPLES` bootstrap resamples of the sequences as its
    standard error (the ECE is a statistic of the whole set, not a mean over sequences).
    `per_sequence` keeps the gaps."""
    n = len(gaps)
    picks = np.asarray(jax.random.randint(key, (ECE_RESAMPLES, n), 0, n))
    counts = np.zeros((ECE_RESAMPLES, n))
    np.add.at(counts, (np.arange(ECE_RESAMPLES)[:, None], picks), 1.0)
    sums = (counts @ gaps.reshape(n, -1)).reshape(ECE_RESAMPLES, *gaps.shape[1:])
    resampled = _ece_of_sums(sums, n)  # [R, B]
    stats = (expected_calibration_error(gaps), resampled.std(0, ddof=1))
    return curve_of(learner, spec, metric, unit, budgets, gaps, seed, subset, stats=stats)


def curve_of(
    learner: str,
    spec: str,
    metric: str,
    unit: str,
    budgets: tuple[int, ...],
    values: np.ndarray,
    seed: int | None,
    subset: str,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> Curve:
    """The curve of per-sequence values [N, B]: their mean and standard error per budget, or
    the given `stats` (mean, standard error) of a statistic that is not a mean."""
    if stats is None:
        stats = (values.mean(0), values.std(0, ddof=1) / np.sqrt(len(values)))
    return Curve(
        learner,
        spec,
        metric,
        unit,
        budgets,
        tuple(map(float, stats[0])),
        tuple(map(float, stats[1])),
        len(values),
        -1 if seed is None else seed,
        subset,
        values,
    )


def _evaluate_steps(learner, problem, budgets, num_runs, key, seed) -> Curves:
    """Training loss after each budget of steps, over `num_runs` runs of the problem."""
    k_tune, k_eval = jax.random.split(key)
    losses = learner.step_losses(problem, budgets, k_tune)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(k_eval, jnp.arange(num_runs))
    values = np.concatenate(
        [np.asarray(losses(keys[i : i + CHUNK]), np.float64) for i in range(0, num_runs, CHUNK)]
    )
    return Curves(
        (curve_of(learner.name, problem.spec, "loss", "steps", budgets, values, seed, "all"),)
    )


def _per_sequence(name, predict, family, budgets, num, length, subset, key, metrics, optional):
    """metric -> its values [num, len(budgets)] per sequence ([num, B, bins] for 'ece'); the
    `optional` metrics are left out, rather than refused, for a learner without
    probabilities."""
    rows: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for pred, target in chunks(predict, family, budgets, num, length, subset, key):
        for m in metrics:
            fn, needs_probs = METRICS[m]
            if needs_probs and pred.log_probs is None:
                if m in optional:
                    rows.pop(m, None)
                    continue
                raise UserError(f"learner {name!r} gives no probabilities, so no {m!r}")
            rows[m].append(np.asarray(fn(pred, target), np.float64))
    return {m: np.concatenate(r)[:num] for m, r in rows.items()}


def subsets_of(family: ExampleFamily) -> tuple[str, ...]:
    """The subsets a family is evaluated on: its pool and beyond it, or all tasks."""
    return ("seen", "unseen") if family.num_tasks is not None else ("all",)


def example_setting(
    learner: Learner, family: ExampleFamily, budgets: Sequence[int], length: int | None
) -> tuple[tuple[int, ...], int]:
    """The checked budgets and sequence length of a predictor on a task family."""
    if not isinstance(learner, Predictor):
        raise UserError(
            f"learner {learner.name!r} does not predict from examples; {family.spec!r} is a "
            "task family (budgets count examples)"
        )
    budgets = check_budgets(budgets)
    length = budgets[-1] + 1 if length is None else int(length)
    if length < 1:
        raise UserError(f"length must be a positive int, got {length}")
    return check_budgets(budgets, below=length), length


def chunks(
    predict: Predict,
    family: ExampleFamily,
    budgets: tuple[int, ...],
    num: int,
    length: int,
    subset: str,
    key: jax.Array,
) -> Iterator[tuple[Predictions, jax.Array]]:
    """(predictions, targets [n, B]) on the sequences of `subset` drawn from `key`, a chunk
    at a time; together at least `num` sequences (the last chunk may run over)."""
    idx = jnp.asarray(budgets)
    chunk = min(CHUNK, num)
    for c in range(math.ceil(num / chunk)):
        batch = family.sample(jax.random.fold_in(key, c), chunk, length, subset)
        # no learner may turn invalid data into a score (a NaN input makes every kNN
        # distance NaN, and top-k then ranks the query itself first)
        if not bool(jnp.isfinite(batch.x).all() & jnp.isfinite(batch.y).all()):
            raise UserError(
                f"family {family.spec!r} drew non-finite inputs or targets (nan or inf); "
                "cannot score a learner on them"
            )
        yield predict(batch.x, batch.y), batch.y[:, idx]
