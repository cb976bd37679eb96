"""Optimization curves: inner training loss versus step, for learned and hand-designed
optimizers on the same inner problems (budget_unit "steps")."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt.base import HandDesigned, LearnedOptimizer, Theta
from lopt.problems import InnerProblem
from lopt.training import train_run
from meta.evaluate import Curve

HALF_DECADES = tuple(float(10.0**e) for e in np.arange(-4.0, -0.99, 0.5))  # 1e-4 .. 1e-1


def runs(
    lopt: LearnedOptimizer, theta: Theta, problem: InnerProblem, steps: int, seeds: int, key
) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch losses [seeds, steps] and final training losses [seeds]; run s uses
    fold_in(key, s), so every optimizer sees the same problems and batches."""
    losses, final = _runs(lopt, problem, steps, seeds, theta, key)
    return np.asarray(losses, np.float64), np.asarray(final, np.float64)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _runs(lopt, problem, steps, seeds, theta, key):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(seeds))
    return jax.vmap(lambda k: train_run(lopt, theta, problem, steps, k))(keys)


class Tuned(NamedTuple):
    name: str  # e.g. "adam(lr=3e-02)"
    lr: float
    losses: np.ndarray  # [seeds, steps] at the best learning rate
    final: np.ndarray  # [seeds]
    grid: dict[float, float]  # learning rate -> mean final loss


def tuned(
    name: str,
    make,
    problem: InnerProblem,
    steps: int,
    seeds: int,
    key,
    tune_seeds: int | None = None,
    grid: Sequence[float] = HALF_DECADES,
) -> Tuned:
    """The hand-designed optimizer at the grid learning rate of best mean final loss over the
    first `tune_seeds` runs (default: all; a diverged run counts as infinitely bad), then run
    `seeds` times. One compiled program serves the whole grid."""
    opt = HandDesigned(name, make)
    tune_seeds = tune_seeds or seeds
    results, finals = {}, {}
    for lr in grid:
        results[lr] = runs(opt, {"lr": jnp.float32(lr)}, problem, steps, tune_seeds, key)
        final = results[lr][1]
        finals[lr] = float(np.mean(final)) if np.all(np.isfinite(final)) else float("inf")
    best = min(finals, key=finals.get)
    if tune_seeds == seeds:  # the tuning runs are the reported runs
        losses, final = results[best]
    else:
        losses, final = runs(opt, {"lr": jnp.float32(best)}, problem, steps, seeds, key)
    return Tuned(f"{name}(lr={best:.0e})", best, losses, final, finals)


def curve(name: str, losses: np.ndarray, problem: InnerProblem, every: int, seed: int) -> Curve:
    """Mean minibatch loss at every `every`-th step (and the last), with standard errors."""
    steps = losses.shape[1]
    at = sorted(set(range(0, steps, every)) | {steps - 1})
    sub = losses[:, at]
    return Curve(
        name,
        describe(problem),
        "loss",
        "steps",
        tuple(at),
        tuple(map(float, sub.mean(0))),
        tuple(map(float, sub.std(0, ddof=1) / np.sqrt(len(sub)))),
        len(sub),
        seed,
        "all",
        sub,
    )


def describe(problem: InnerProblem) -> str:
    kind, _, sizes = problem.model.spec.rpartition(":")
    return f"{kind or 'mlp'}[{sizes}] batch {problem.batch_size} on {problem.family}"
