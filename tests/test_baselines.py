"""Baselines and the evaluation API."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.icl.baselines import BASELINES, baseline
from metalearn.meta.evaluate import check_budgets, evaluate
from metalearn.meta.results import write_json

REG = data.make("linear_regression", dim=4, noise=0.5)
CLS = data.make("random", dim=4, num_classes=3, items=3)


def test_ridge_matches_its_closed_form():
    batch = REG.sample(jax.random.key(0), 5, 12)
    budgets = [0, 1, 3, 6, 11]
    pred = baseline("ridge").predictor(REG, 12, budgets, jax.random.key(1))(batch.x, batch.y).value
    for n in range(5):
        for j, k in enumerate(budgets):
            x, y = np.asarray(batch.x[n, :k], np.float64), np.asarray(batch.y[n, :k], np.float64)
            w = np.linalg.inv(x.T @ x + 0.25 * np.eye(4)) @ x.T @ y  # lambda = noise^2
            np.testing.assert_allclose(
                pred[n, j], np.asarray(batch.x[n, k]) @ w, rtol=1e-3, atol=1e-4
            )


def test_dmmse_matches_its_closed_form_and_beats_ridge_on_pool_tasks():
    fam = data.make("linear_regression", dim=3, noise=0.5, num_tasks=5, seed=2)
    # the pool, drawn independently of the baseline: task i from fold_in(key(seed), i)
    pool = np.stack(
        [np.asarray(fam.sample_task(jax.random.fold_in(jax.random.key(2), i))) for i in range(5)]
    ).astype(np.float64)
    batch = fam.sample(jax.random.key(0), 4, 9, subset="seen")
    budgets = [0, 1, 4, 8]
    pred = baseline("dmmse").predictor(fam, 9, budgets, jax.random.key(1))(batch.x, batch.y).value
    for n in range(4):
        x, y = np.asarray(batch.x[n], np.float64), np.asarray(batch.y[n], np.float64)
        for j, k in enumerate(budgets):
            sse = np.array([np.sum((y[:k] - x[:k] @ w) ** 2) for w in pool])
            p = np.exp(-(sse - sse.min()) / (2 * 0.25))
            w = (p / p.sum()) @ pool
            np.testing.assert_allclose(pred[n, j], x[k] @ w, rtol=1e-4, atol=1e-4)
    # Bayes-optimal on the pool's tasks: below ridge, whose prior ignores the pool
    key = jax.random.key(3)
    d = evaluate(baseline("dmmse"), fam, [2, 4], 512, key).get(subset="seen")
    r = evaluate(baseline("ridge"), fam, [2, 4], 512, key).get(subset="seen")
    diff = d.per_sequence - r.per_sequence  # the same sequences
    assert (diff.mean(0) + 3 * diff.std(0) / np.sqrt(len(diff)) < 0).all()


def test_least_squares_interpolates_and_averaging_is_garg():
    fam = data.make("linear_regression", dim=3, noise=0.0)
    batch = fam.sample(jax.random.key(0), 3, 8)
    pred = (
        baseline("least_squares").predictor(fam, 8, [5], jax.random.key(1))(batch.x, batch.y).value
    )
    np.testing.assert_allclose(pred[:, 0], batch.y[:, 5], rtol=1e-3, atol=1e-3)  # noiseless, k > d
    avg = baseline("averaging").predictor(fam, 8, [4], jax.random.key(1))(batch.x, batch.y).value
    w = jnp.mean(batch.x[:, :4] * batch.y[:, :4, None], 1)
    np.testing.assert_allclose(avg[:, 0], jnp.sum(w * batch.x[:, 4], -1), rtol=1e-5)


def test_knn_copies_a_repeated_item_and_never_peeks():
    batch = CLS.sample(jax.random.key(0), 64, 20)
    pred = baseline("knn").predictor(CLS, 20, [0, 19], jax.random.key(1))(batch.x, batch.y).value
    acc0 = float(jnp.mean(pred[:, 0] == batch.y[:, 0]))
    assert acc0 < 0.7  # at budget 0 there is nothing to copy (chance is 1/3)
    # with 3 items and 19 examples seen, the item has almost surely appeared: 1-NN is exact
    assert float(jnp.mean(pred[:, 1] == batch.y[:, 19])) > 0.95


def test_tuned_logistic_regression_learns():
    curves = evaluate(baseline("logistic_sgd"), CLS, [0, 15], 64, jax.random.key(0))
    c = curves.get(metric="accuracy")
    assert c.mean[1] > 0.8 > c.mean[0]


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_runs_or_refuses_clearly(name):
    b = BASELINES[name]
    for fam in (REG, CLS):
        kind = "regression" if fam.num_classes is None else "classification"
        metric = "mse" if fam.num_classes is None else "accuracy"
        if kind in b.kinds:
            try:
                c = evaluate(b, fam, [0, 2, 5], 8, jax.random.key(0)).get(metric=metric)
            except UserError as e:  # a baseline of pool tasks (dmmse) says so and takes a pool
                assert "finite pool" in str(e)
                pooled = dataclasses.replace(fam, num_tasks=4)
                c = evaluate(b, pooled, [0, 2, 5], 8, jax.random.key(0))
                c = c.get(subset="seen", metric=metric)
            assert len(c.mean) == 3 and all(math.isfinite(m) for m in c.mean)
        else:
            with pytest.raises(UserError, match=f"{name}.*applies to"):
                evaluate(b, fam, [0, 2], 8, jax.random.key(0))


def test_curves_seen_unseen_records_and_json(tmp_path):
    fam = data.make("linear_regression", dim=4, noise=0.5, num_tasks=3)
    curves = evaluate(baseline("ridge"), fam, [0, 4, 9], 32, jax.random.key(0), seed=0)
    assert [c.subset for c in curves] == ["seen", "unseen"]
    write_json(curves, tmp_path / "r.json")
    records = json.loads((tmp_path / "r.json").read_text())
    assert {r["subset"] for r in records} == {"seen", "unseen"}
    r = records[0]
    assert r["schema"] == 1 and r["metric"] == "mse" and r["budget_unit"] == "examples"
    assert r["budget"] == [0, 4, 9] and len(r["mean"]) == len(r["stderr"]) == 3
    assert r["learner"] == "ridge" and r["family"] == fam.spec and r["num_sequences"] == 32


def test_same_key_same_curves_and_shared_sequences():
    a = evaluate(baseline("ridge"), REG, [1, 5], 16, jax.random.key(3)).get()
    b = evaluate(baseline("ridge"), REG, [1, 5], 16, jax.random.key(3)).get()
    assert a.mean == b.mean
    k = evaluate(baseline("knn"), REG, [1, 5], 16, jax.random.key(3)).get()
    assert a.per_sequence.shape == k.per_sequence.shape == (16, 2)


def test_budget_checks():
    assert check_budgets([3, 0, 3]) == (0, 3)
    with pytest.raises(UserError, match=r"budget 8.*below the length \(8\)"):
        check_budgets([0, 8], 8)
    with pytest.raises(UserError, match="non-negative"):
        check_budgets([-1], 4)


def test_calibration_error_by_hand():
    """Ten queries at confidence 0.8 of which 8 are right: calibrated (0). Ten at 0.9 of which
    5 are right: a gap of 0.4, on all the queries."""
    from metalearn.meta.compare import Collected, calibration_error

    def queries(conf, right):
        p = np.array([conf, 1 - conf])
        log_probs = np.log(np.tile(p, (10, 1, 1)))  # [10, 1, 2]: label 0 predicted
        target = np.array([[0]] * right + [[1]] * (10 - right))
        return Collected("x", (0,), np.zeros((10, 1), int), log_probs, target)

    np.testing.assert_allclose(calibration_error(queries(0.8, 8)), [0.0], atol=1e-6)
    np.testing.assert_allclose(calibration_error(queries(0.9, 5)), [0.4], atol=1e-6)


def test_distance_curves_on_the_sequences_evaluate_scores():
    from metalearn.meta.compare import distance_curves

    fam = data.make("linear_regression", dim=3, noise=0.5, num_tasks=4, seed=1)
    budgets, key = [0, 2, 5], jax.random.key(7)
    ridge, dmmse = baseline("ridge"), baseline("dmmse")
    curves = distance_curves(ridge, [dmmse], fam, budgets, 24, key, length=6, seed=0)
    assert [(c.subset, c.metric) for c in curves] == [
        ("seen", "distance_to_dmmse"),
        ("unseen", "distance_to_dmmse"),
    ]
    # by hand, on the batch evaluate draws for each subset: split(key) -> (tune, eval),
    # fold_in(eval, subset index), fold_in(., chunk 0)
    k_tune, k_eval = jax.random.split(key)
    for i, c in enumerate(curves):
        batch = fam.sample(jax.random.fold_in(jax.random.fold_in(k_eval, i), 0), 24, 6, c.subset)
        a = ridge.predictor(fam, 6, budgets, k_tune)(batch.x, batch.y).value
        b = dmmse.predictor(fam, 6, budgets, k_tune)(batch.x, batch.y).value
        expected = np.mean((np.asarray(a, np.float64) - np.asarray(b)) ** 2, 0)
        np.testing.assert_allclose(c.mean, expected, rtol=1e-5)
        assert min(c.mean[1:]) > 0  # two different rules once there is data
        # the same sequences as the curves of evaluate
        mse = evaluate(ridge, fam, budgets, 24, key).get(subset=c.subset)
        truth = np.asarray(batch.y[:, jnp.asarray(budgets)], np.float64)
        np.testing.assert_allclose(mse.mean, np.mean((a - truth) ** 2, 0), rtol=1e-5)
    same = distance_curves(ridge, [ridge], fam, budgets, 24, key, length=6)
    assert all(max(c.mean) == 0 for c in same)


def test_garg_baselines_beat_least_squares_where_they_should():
    """On sparse tasks with fewer examples than dimensions LASSO recovers what least squares
    cannot; on trees a tree learner beats a linear fit (paired, on the same sequences)."""
    key = jax.random.key(8)
    sparse = data.make("sparse_linear", dim=8, sparsity=2)
    lasso = evaluate(baseline("lasso"), sparse, [5], 64, key).get().per_sequence[:, 0]
    lsq = evaluate(baseline("least_squares"), sparse, [5], 64, key).get().per_sequence[:, 0]
    diff = lsq - lasso
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(diff))
    tree = data.make("decision_tree", dim=3, depth=2)
    learned = evaluate(baseline("tree"), tree, [30], 64, key).get().per_sequence[:, 0]
    linear = evaluate(baseline("least_squares"), tree, [30], 64, key).get().per_sequence[:, 0]
    diff = linear - learned
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(diff))
