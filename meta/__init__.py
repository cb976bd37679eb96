"""The shared backbone: one meta-training loop, gradient estimators, one evaluation API.

Core modules (loop, objective, evaluate, baselines, results) import no model code; `meta.runs`
and `meta.cli` find experiments and learners by name.
"""

from meta.errors import NonFiniteError, UserError
from meta.evaluate import Curve, Curves, Learner, evaluate
from meta.experiment import Setup
from meta.loop import LoopConfig, TrainResult, meta_train
from meta.objective import Backprop, Estimate, GradientEstimator, Objective
from meta.optim import OptimConfig
from meta.runs import Run, load, make_config, train

__all__ = [
    "Backprop",
    "Curve",
    "Curves",
    "Estimate",
    "GradientEstimator",
    "Learner",
    "LoopConfig",
    "NonFiniteError",
    "Objective",
    "OptimConfig",
    "Run",
    "Setup",
    "TrainResult",
    "UserError",
    "evaluate",
    "load",
    "make_config",
    "meta_train",
    "train",
]
