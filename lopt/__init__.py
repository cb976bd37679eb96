"""Learned optimizers: small networks that turn gradients into updates, as optax transformations,
meta-trained through truncated unrolls of inner training."""

from lopt.base import HAND_DESIGNED, HandDesigned, LearnedOptimizer
from lopt.mlp_lopt import MLPLOpt
from lopt.problems import MLPProblem
from lopt.training import InnerTraining, train_run

LOPTS = {"mlp": MLPLOpt}

__all__ = [
    "HAND_DESIGNED",
    "LOPTS",
    "HandDesigned",
    "InnerTraining",
    "LearnedOptimizer",
    "MLPLOpt",
    "MLPProblem",
    "train_run",
]
