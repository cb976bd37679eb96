"""What an experiment hands the backbone: everything needed to train and evaluate one learner.

An experiment is a module with a frozen `Config` dataclass whose `setup()` returns a `Setup`;
the backbone never looks inside the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path

import jax

from metalearn.meta.evaluate import Curves, Learner
from metalearn.meta.loop import LoopConfig
from metalearn.meta.objective import GradientEstimator, Theta
from metalearn.meta.optim import OptimConfig
from metalearn.meta.truncated import TruncatedTask


@dataclasses.dataclass(frozen=True)
class EvalDefaults:
    """What `metalearn eval` assumes for a run when not told otherwise.

    family: the SPEC that `--family train` stands for (the run's training family).
    examples: the sequence length on task families (budgets count examples).
    steps: the optimizer steps on inner problems (budgets count steps).
    """

    family: str | None = None
    examples: int | None = None
    steps: int | None = None

    def length(self, unit: str) -> int | None:
        return {"examples": self.examples, "steps": self.steps}.get(unit)


@dataclasses.dataclass(frozen=True)
class Batchable:
    """How an experiment's runs can train together as one vmapped model (`meta.batch`).

    signature: equal for setups whose meta-training differs only in the seed, the outer
      learning rate and `scalars` (the backbone compares the optimizer and loop settings
      itself).
    scalars: this setup's values of the scalars its estimator can take traced (e.g. a task
      pool's size); setups batch together only when they name the same scalars.
    estimator: the traced scalars (each a 0-d array) -> the estimator they stand for.
    """

    signature: Hashable
    scalars: Mapping[str, int | float]
    estimator: Callable[[Mapping[str, jax.Array]], GradientEstimator]


@dataclasses.dataclass(frozen=True)
class Setup:
    """A meta-training problem and how to evaluate its result.

    init: fresh meta-parameters from a key.
    estimator: the meta-gradient estimator (e.g. `backprop(objective)`).
    learner: meta-parameters (and a display name) -> a learner for `meta.evaluate`.
    periodic_eval: cheap scores logged every `loop.eval_every` steps.
    report: the study run after training: evaluates, writes files under the run directory,
      returns the curves.
    eval_defaults: the family and lengths `metalearn eval` uses for this run's learner.
    truncated_task: the system the estimator unrolls, if any (`metalearn chaos` diagnoses it).
    flops_per_step: meta-parameters -> the training FLOPs of one meta-training step, where the
      experiment counts them (a sweep's table reports steps x this as training compute).
    batchable: how runs of this experiment train together as one vmapped model, if they can.
    """

    init: Callable[[jax.Array], Theta]
    estimator: GradientEstimator
    optim: OptimConfig
    loop: LoopConfig
    learner: Callable[[Theta, str], Learner]
    periodic_eval: Callable[[Theta], dict[str, float]] | None = None
    report: Callable[[Theta, Path, str], Curves] | None = None
    eval_defaults: EvalDefaults = EvalDefaults()
    truncated_task: TruncatedTask | None = None
    flops_per_step: Callable[[Theta], float] | None = None
    batchable: Batchable | None = None
