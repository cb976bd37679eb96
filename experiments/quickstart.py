"""Quickstart: a transformer meta-trained to classify in context (GPICL), in minutes on a CPU.

    metalearn train                 # = metalearn train quickstart

Tasks are random 16-d projections of scikit-learn's 8x8 digits with permuted labels
(Kirsch et al. 2022), fresh for every sequence. After training it prints accuracy versus the
number of examples seen, beside nearest-neighbour and logistic-regression baselines, on unseen
tasks of the training family and on families it never saw, and writes runs/quickstart/
{results.json, curves.png, table.txt}.
"""

from __future__ import annotations

import dataclasses

from experiments.icl_study import TRAIN, EvalConfig, ICLConfig
from icl.learner import ModelConfig
from meta.loop import LoopConfig
from meta.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class Config(ICLConfig):
    family: str = "projected:base=digits,dim=16"
    length: int = 50
    batch_size: int = 128
    model: ModelConfig = ModelConfig(depth=2, width=64, heads=4)
    optim: OptimConfig = OptimConfig(lr=3e-3, warmup=200, eps=1e-10)
    loop: LoopConfig = LoopConfig(steps=2000, log_every=50, eval_every=500, checkpoint_every=1000)
    eval: EvalConfig = EvalConfig(
        families=(TRAIN, "random:dim={dim},num_classes={num_classes},items=10"),
        optional=("projected:base=fashion_mnist,dim={dim},split=test",),
        baselines=("knn", "nearest_centroid", "logistic_adam"),
        budgets=(0, 1, 2, 4, 8, 16, 32, 49),
        sequences=1000,
    )
