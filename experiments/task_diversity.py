"""Study 1: task diversity in in-context regression (Raventos, Paul, Chen & Ganguli 2023).

    metalearn sweep task_diversity --out sweeps/task_diversity

A transformer meta-trained on linear regression whose tasks come from a finite pool of M
weight vectors, M = 2^1 ... 2^15 and unlimited, each at two data budgets (a short and a long
run, `loop.steps`), since a short run makes a finite pool look less memorizing. The report of
every point gives the model's squared error on pool ('seen') and fresh ('unseen') tasks beside
ridge (Bayes-optimal for fresh tasks) and dMMSE (Bayes-optimal for the pool), and the mean
squared distance of the model's predictions to each. `metalearn transitions` (run at the end
of the sweep) reads, on fresh tasks, whether the model is closer to ridge or to dMMSE, and the
threshold: the smallest pool from which it stays closer to ridge at every larger pool.

Raventos et al.'s base model (8 layers, D=8, 500k steps) crosses at M = 2^11-2^12, growing
about linearly with D. This is a smaller scale, chosen to fit 90 minutes on 2 CPU cores:
D=4, sequences of 16, a 2-layer width-64 transformer, 1000 and 4000 steps of 128 sequences
(a 4000-step point takes about 2 minutes here).
The threshold is located from the numbers, not assumed; see docs/studies/task_diversity.md.
"""

from __future__ import annotations

import dataclasses

from metalearn.experiments.icl_study import TRAIN, EvalConfig, ICLConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class Config(ICLConfig):
    family: str = "linear_regression:dim=4,noise=0.5,num_tasks=1024"
    length: int = 16
    batch_size: int = 128
    weighting: str = "log"
    model: ModelConfig = ModelConfig(depth=2, width=64, heads=4)
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup=100, eps=1e-10)
    loop: LoopConfig = LoopConfig(steps=4000, log_every=100, eval_every=0, checkpoint_every=1000)
    eval: EvalConfig = EvalConfig(
        families=(TRAIN,),
        baselines=("ridge", "dmmse"),
        distances=("ridge", "dmmse"),
        budgets=(0, 1, 2, 4, 8, 12, 15),
        sequences=1000,
    )


# the study: `metalearn sweep task_diversity` with no --grid runs this
SWEEP = {
    "grid": {"family.num_tasks": "2**1..2**15,none", "loop.steps": [1000, 4000]},
    "seeds": 1,
    "analysis": {"kind": "closer", "over": "family.num_tasks", "by": ["loop.steps"]},
}
