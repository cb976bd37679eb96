"""In-context learners: sequence models that read (x_1, y_1, ..., x_t) and predict y_t."""

from icl.learner import InContextLearner, ModelConfig, SequenceObjective, TrainedPredictor
from icl.lstm import LSTM
from icl.tokens import tokens
from icl.transformer import Transformer

__all__ = [
    "LSTM",
    "InContextLearner",
    "ModelConfig",
    "SequenceObjective",
    "TrainedPredictor",
    "Transformer",
    "tokens",
]
