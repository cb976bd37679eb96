"""The shared backbone: one meta-training loop, gradient estimators, one evaluation API.

It imports no task family, no model code and no experiment: the plug-ins satisfy its
protocols (`Objective`, `GradientEstimator`, `TruncatedTask`, `Learner`) structurally.
Run directories and experiment lookup live one floor up, in `metalearn.runs`.
"""

from metalearn.core.errors import NonFiniteError, UserError
from metalearn.meta.evaluate import Curve, Curves, Learner, evaluate
from metalearn.meta.experiment import EvalDefaults, Setup
from metalearn.meta.loop import LoopConfig, TrainResult, meta_train
from metalearn.meta.objective import Estimate, Estimator, GradientEstimator, Objective, backprop
from metalearn.meta.optim import OptimConfig

__all__ = [
    "Curve",
    "Curves",
    "Estimate",
    "Estimator",
    "EvalDefaults",
    "GradientEstimator",
    "Learner",
    "LoopConfig",
    "NonFiniteError",
    "Objective",
    "OptimConfig",
    "Setup",
    "TrainResult",
    "UserError",
    "backprop",
    "evaluate",
    "meta_train",
]
