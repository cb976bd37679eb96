"""Issue 17, item 6: a transformer trained on linear functions, probed out of distribution
(Garg, Tsipras, Liang & Valiant 2022, Sec. 4), and Garg et al.'s other function classes.

    metalearn train garg_shifts

Training: noiseless linear functions y = w.x on x, w ~ N(0, I_8), a fresh task per sequence
of 2 x 8 + 1 = 17 examples (Garg et al.'s 2d + 1 at d = 8 instead of 20, to train on 2 CPU
cores in minutes), with linreg's recipe (4 layers, width 64, the token shift, the `log`
weighting). The report gives squared error at every budget on fresh tasks of the training
family and under Garg et al.'s prompt shifts - skewed input covariance (eigenvalues ~ i^-2),
inputs in one orthant, noisy outputs (noise 0.5), inputs scaled by 2, each query orthogonal
to the examples before it - and on the other function classes (sparse linear with 2 of 8
coordinates, two-layer ReLU networks, depth-3 decision trees), beside least squares, ridge,
averaging, LASSO, greedy trees and a two-layer network trained by Adam on the prefix.
Garg et al. find the transformer at d = 20 matches least squares (error ~ 0 from k = d) and
stays close to it under these shifts. docs/studies/garg_shifts.md has the measured run.
"""

from __future__ import annotations

import dataclasses

from metalearn.experiments import linreg
from metalearn.experiments.icl_study import TRAIN, EvalConfig

LINEAR = "linear_regression:dim={dim},noise=0"
SHIFTS = (
    f"{LINEAR},skew=2",
    f"{LINEAR},orthant=true",
    "linear_regression:dim={dim},noise=0.5",
    f"{LINEAR},scale=2",
    f"{LINEAR},orthogonal=true",
)
OTHER_CLASSES = (
    "sparse_linear:dim={dim},sparsity=2",
    "relu_net:dim={dim}",
    "decision_tree:dim={dim},depth=3",
)


@dataclasses.dataclass(frozen=True)
class Config(linreg.Config):
    """linreg's recipe on noiseless linear functions of Garg et al.'s prompt length 2d + 1."""

    family: str = "linear_regression:dim=8,noise=0"
    length: int = 17
    eval: EvalConfig = EvalConfig(
        families=(TRAIN, *SHIFTS, *OTHER_CLASSES),
        baselines=("least_squares", "ridge", "averaging", "lasso", "tree", "mlp_adam"),
        sequences=500,
    )
