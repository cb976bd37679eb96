"""Learned optimizers: small networks that turn gradients into updates, as optax transformations,
meta-trained through truncated unrolls of inner training."""

from metalearn.lopt.adafac_mlp_lopt import AdafacMLPLOpt
from metalearn.lopt.base import HAND_DESIGNED, HandDesigned, LearnedOptimizer
from metalearn.lopt.mlp_lopt import MLPLOpt
from metalearn.lopt.models import MLP, ConvNet, PatchTransformer
from metalearn.lopt.problem_family import ProblemFamily
from metalearn.lopt.problems import InnerProblem
from metalearn.lopt.rnn_mlp_lopt import RNNMLPLOpt
from metalearn.lopt.training import InnerTraining, train_run
from metalearn.lopt.velo import VeLO
from metalearn.lopt.velo_weights import load_velo, save_velo

LOPTS = {"mlp": MLPLOpt, "adafac_mlp": AdafacMLPLOpt, "rnn_mlp": RNNMLPLOpt, "velo": VeLO}

__all__ = [
    "HAND_DESIGNED",
    "LOPTS",
    "AdafacMLPLOpt",
    "HandDesigned",
    "ConvNet",
    "InnerTraining",
    "LearnedOptimizer",
    "MLPLOpt",
    "InnerProblem",
    "MLP",
    "PatchTransformer",
    "ProblemFamily",
    "RNNMLPLOpt",
    "VeLO",
    "load_velo",
    "save_velo",
    "train_run",
]
