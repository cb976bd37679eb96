"""Calibration in `evaluate`: the Brier score and the expected calibration error of every
learner with probabilities, checked against a plain computation on the same queries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn import data
from metalearn.icl.baselines import baseline
from metalearn.meta.compare import collect
from metalearn.meta.evaluate import ECE_BINS, Predictions, evaluate

FAMILY = data.from_spec("projected:base=digits,dim=16")
BUDGETS = [0, 5, 9]


class Softmax:
    """A predictor whose probabilities are a softmax of the query's first C inputs: no
    training, varied confidences, a fixed function of the sequence."""

    name = "softmax"

    def predictor(self, family, length, budgets, key):
        idx = jnp.asarray(budgets)

        def predict(x, y):
            log_probs = jax.nn.log_softmax(3.0 * x[:, idx, : family.num_classes], -1)
            return Predictions(jnp.argmax(log_probs, -1), log_probs)

        return predict


def plain_ece(probs: np.ndarray, target: np.ndarray, bins: int) -> float:
    """Top-label ECE of queries probs [N, C], target [N], one query at a time."""
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for p, t in zip(probs, target, strict=True):
        confidence = float(p.max())
        members[min(int(confidence * bins), bins - 1)].append((confidence, p.argmax() == t))
    total = 0.0
    for inside in members:
        if inside:
            mean_conf = sum(c for c, _ in inside) / len(inside)
            accuracy = sum(r for _, r in inside) / len(inside)
            total += len(inside) / len(probs) * abs(mean_conf - accuracy)
    return total


def test_ece_and_brier_match_a_plain_computation():
    key = jax.random.key(11)
    curves = evaluate(Softmax(), FAMILY, BUDGETS, 300, key)
    assert {c.metric for c in curves} == {"accuracy", "nll", "brier", "ece"}
    queries = collect(Softmax(), FAMILY, BUDGETS, 300, key)
    probs = np.exp(queries.log_probs)
    onehot = np.eye(probs.shape[-1])[queries.target]
    brier = ((probs - onehot) ** 2).sum(-1).mean(0)
    np.testing.assert_allclose(curves.get(metric="brier").mean, brier, rtol=1e-5)
    ece = [plain_ece(probs[:, j], queries.target[:, j], ECE_BINS) for j in range(len(BUDGETS))]
    got = curves.get(metric="ece")
    np.testing.assert_allclose(got.mean, ece, rtol=1e-4, atol=1e-6)
    # the predictor is badly calibrated (confident at random), and the bootstrap sees noise
    assert min(got.mean) > 0.05 and min(got.stderr) > 0
    again = evaluate(Softmax(), FAMILY, BUDGETS, 300, key).get(metric="ece")
    assert again.stderr == got.stderr  # the bootstrap draws from the evaluation's key


def test_probability_metrics_only_where_there_are_probabilities():
    key = jax.random.key(3)
    knn = evaluate(baseline("knn"), FAMILY, BUDGETS, 8, key)
    assert [c.metric for c in knn] == ["accuracy"]
    with pytest.raises(Exception, match="no probabilities, so no 'ece'"):
        evaluate(baseline("knn"), FAMILY, BUDGETS, 8, key, metrics=("ece",))
    # the logistic baselines are probabilistic classifiers: their probabilities sum to one
    # and their predicted label is the most probable one
    logistic = collect(baseline("logistic_adam"), FAMILY, BUDGETS, 8, key)
    np.testing.assert_allclose(np.exp(logistic.log_probs).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(logistic.log_probs.argmax(-1), logistic.value)
