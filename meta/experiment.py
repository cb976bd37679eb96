"""What an experiment hands the backbone: everything needed to train and evaluate one learner.

An experiment is a module with a frozen `Config` dataclass whose `setup()` returns a `Setup`;
the backbone never looks inside the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax

from meta.evaluate import Curves, Learner
from meta.loop import LoopConfig
from meta.objective import GradientEstimator, Theta
from meta.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class Setup:
    """A meta-training problem and how to evaluate its result.

    init: fresh meta-parameters from a key.
    estimator: the meta-gradient estimator (e.g. `Backprop(objective)`).
    learner: meta-parameters (and a display name) -> a learner for `meta.evaluate`.
    periodic_eval: cheap scores logged every `loop.eval_every` steps.
    report: the study run after training: evaluates, writes files under the run directory,
      returns the curves.
    """

    init: Callable[[jax.Array], Theta]
    estimator: GradientEstimator
    optim: OptimConfig
    loop: LoopConfig
    learner: Callable[[Theta, str], Learner]
    periodic_eval: Callable[[Theta], dict[str, float]] | None = None
    report: Callable[[Theta, Path, str], Curves] | None = None
