"""In-context learners: sequence models that read (x_1, y_1, ..., x_t) and predict y_t."""

from metalearn.icl.fast_weights import FastWeights
from metalearn.icl.learner import InContextLearner, ModelConfig, SequenceObjective, TrainedPredictor
from metalearn.icl.lstm import LSTM
from metalearn.icl.tokens import tokens
from metalearn.icl.transformer import Transformer

__all__ = [
    "FastWeights",
    "LSTM",
    "InContextLearner",
    "ModelConfig",
    "SequenceObjective",
    "TrainedPredictor",
    "Transformer",
    "tokens",
]
