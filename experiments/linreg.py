"""In-context linear regression: a transformer against the Bayes-optimal ridge predictor.

    metalearn train linreg

Tasks y = w.x + eps with x, w ~ N(0, I_8) and noise 0.5, fresh for every sequence of 16
examples (Garg et al. 2022; Raventos et al. 2023). The report compares squared error at
every budget 1..15 with ridge (posterior mean, Bayes-optimal here) and least squares.
"""

from __future__ import annotations

import dataclasses

from experiments.icl_study import TRAIN, EvalConfig, ICLConfig
from icl.learner import ModelConfig
from meta.loop import LoopConfig
from meta.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class Config(ICLConfig):
    family: str = "linear_regression:dim=8,noise=0.5"
    length: int = 16
    batch_size: int = 256
    weighting: str = "log"
    model: ModelConfig = ModelConfig(depth=4, width=64, heads=4)
    optim: OptimConfig = OptimConfig(lr=1e-2, warmup=200, eps=1e-10)
    loop: LoopConfig = LoopConfig(steps=5500, log_every=100, eval_every=1000, checkpoint_every=1000)
    eval: EvalConfig = EvalConfig(
        families=(TRAIN,),
        baselines=("ridge", "least_squares", "averaging"),
        sequences=8000,
        reference="ridge",
    )
