"""In-context linear regression: a transformer against the Bayes-optimal ridge predictor.

    metalearn train linreg          # about 13 minutes and 0.9 GB on 2 cores

Tasks y = w.x + eps with x, w ~ N(0, I_8) and noise 0.5, fresh for every sequence of 16
examples (Garg et al. 2022; Raventos et al. 2023). The report compares squared error at
every budget with ridge (posterior mean, Bayes-optimal here), least squares and averaging,
and prints the transformer's error divided by ridge's on the same 8000 sequences, with paired
standard errors. Measured here (2-core CPU, 12.8 minutes in all): at most 1.076 (budget 11),
every budget 1..15 within 1.10x, standard errors <= 0.008.

What made it work within the time (1500-step pilots, worst ratio over budgets 1..15): the
token shift (3.9 without, 1.57 with), 4 heads instead of 2 (1.42 -> 1.25), learning rate
1e-2 instead of 1e-3, and the `log` weighting of the loss (1.71 -> 1.57), which keeps the
small errors of late positions from being drowned out by the large ones of early positions.
"""

from __future__ import annotations

import dataclasses

from metalearn.experiments.icl_study import TRAIN, EvalConfig, ICLConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig


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
