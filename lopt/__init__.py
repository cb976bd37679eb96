"""Learned optimizers: small networks that turn gradients into updates, as optax transformations,
meta-trained through truncated unrolls of inner training."""

from lopt.adafac_mlp_lopt import AdafacMLPLOpt
from lopt.base import HAND_DESIGNED, HandDesigned, LearnedOptimizer
from lopt.mlp_lopt import MLPLOpt
from lopt.models import MLP, ConvNet, PatchTransformer
from lopt.problem_family import ProblemFamily
from lopt.problems import InnerProblem
from lopt.rnn_mlp_lopt import RNNMLPLOpt
from lopt.training import InnerTraining, train_run
from lopt.velo import VeLO
from lopt.velo_weights import load_velo, save_velo

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
