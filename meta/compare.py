"""Looking inside predictions: what two learners predict on the same sequences, and how well a
learner's probabilities are calibrated.

`collect` draws exactly the sequences `evaluate` draws with the same key (for one subset), so
its predictions line up with `Curve.per_sequence` and with another learner's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from metalearn.core.errors import UserError
from metalearn.meta.evaluate import (
    ECE_BINS,
    Curves,
    ExampleFamily,
    Predictions,
    Predictor,
    calibration_gaps,
    chunks,
    curve_of,
    example_setting,
    expected_calibration_error,
    subsets_of,
)

DISTANCE = "distance_to_"  # metric prefix: one learner's distance to another's predictions


class Collected(NamedTuple):
    """One learner's predictions at each budget, on sequences drawn from a key."""

    learner: str
    budgets: tuple[int, ...]
    value: np.ndarray  # [N, B] predicted labels or targets
    log_probs: np.ndarray | None  # [N, B, C] (classification, when the learner has them)
    target: np.ndarray  # [N, B] the true labels or targets


def collect(
    learner: Predictor,
    family: ExampleFamily,
    budgets: Sequence[int],
    num_sequences: int,
    key: jax.Array,
    *,
    length: int | None = None,
    subset: str | None = None,
) -> Collected:
    """The learner's predictions on the sequences `evaluate(learner, family, budgets,
    num_sequences, key, length=length)` scores for `subset` (default: 'unseen' for a pool,
    else 'all')."""
    budgets, length = example_setting(learner, family, budgets, length)
    subsets = subsets_of(family)
    subset = subset or subsets[-1]
    if subset not in subsets:
        raise UserError(f"subset must be one of {', '.join(subsets)} here, got {subset!r}")
    k_tune, k_eval = jax.random.split(key)
    predict = learner.predictor(family, length, budgets, k_tune)
    k_subset = jax.random.fold_in(k_eval, subsets.index(subset))
    parts = list(chunks(predict, family, budgets, num_sequences, length, subset, k_subset))
    value = np.concatenate([np.asarray(p.value) for p, _ in parts])[:num_sequences]
    target = np.concatenate([np.asarray(t) for _, t in parts])[:num_sequences]
    log_probs = None
    if all(p.log_probs is not None for p, _ in parts):
        log_probs = np.concatenate([np.asarray(p.log_probs, np.float64) for p, _ in parts])
        log_probs = log_probs[:num_sequences]
    return Collected(learner.name, budgets, value, log_probs, target)


def _same_queries(a: Collected, b: Collected) -> None:
    if a.budgets != b.budgets or not np.array_equal(a.target, b.target):
        raise UserError(
            f"{a.learner!r} and {b.learner!r} were not collected on the same sequences "
            "(use the same family, budgets, number of sequences and key)"
        )


def disagreement(a: Collected, b: Collected) -> np.ndarray:
    """[N, B] per query: 1 where the two predicted labels differ (classification), or the
    squared difference of the two predictions (regression)."""
    _same_queries(a, b)
    if np.issubdtype(a.value.dtype, np.integer):
        return (a.value != b.value).astype(np.float64)
    return (a.value.astype(np.float64) - b.value) ** 2


def distance_curves(
    learner: Predictor,
    references: Sequence[Predictor],
    family: ExampleFamily,
    budgets: Sequence[int],
    num_sequences: int,
    key: jax.Array,
    *,
    length: int | None = None,
    seed: int | None = None,
) -> Curves:
    """How far `learner`'s predictions lie from each reference's, per subset, as curves with
    metric `distance_to_<reference>`: the mean squared difference of the two predictions
    (regression) or the rate at which their labels differ (classification), on the sequences
    `evaluate` scores with the same key (Raventos et al. 2023 compare a transformer with ridge
    and dMMSE this way)."""
    out = []
    for subset in subsets_of(family):
        setting = dict(length=length, subset=subset)
        a = collect(learner, family, budgets, num_sequences, key, **setting)
        for reference in references:
            b = collect(reference, family, budgets, num_sequences, key, **setting)
            metric = DISTANCE + reference.name
            values = disagreement(a, b)
            out.append(
                curve_of(
                    learner.name, family.spec, metric, "examples", a.budgets, values, seed, subset
                )
            )
    return Curves(tuple(out))


def kl_divergence(a: Collected, b: Collected) -> np.ndarray:
    """[N, B] per query: KL(p_a || p_b) between the two predictive distributions."""
    _same_queries(a, b)
    if a.log_probs is None or b.log_probs is None:
        raise UserError("KL divergence needs both learners' log-probabilities")
    return np.sum(np.exp(a.log_probs) * (a.log_probs - b.log_probs), -1)


def calibration_error(c: Collected, bins: int = ECE_BINS) -> np.ndarray:
    """[B] the expected calibration error at each budget (as `evaluate`'s 'ece' metric, here
    with any number of equal-width bins)."""
    if c.log_probs is None:
        raise UserError(f"learner {c.learner!r} gives no probabilities to calibrate")
    if bins < 1:
        raise UserError(f"bins must be a positive int, got {bins}")
    gaps = calibration_gaps(Predictions(c.value, c.log_probs), c.target, bins)
    return expected_calibration_error(np.asarray(gaps, np.float64))
