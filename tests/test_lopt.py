"""Learned optimizers: optax drop-in, hand-computed updates, inner training, the experiment."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metalearn.cli import main
from metalearn.core.errors import UserError
from metalearn.lopt import MLP, HandDesigned, InnerProblem, InnerTraining, MLPLOpt
from metalearn.lopt.mlp_lopt import DECAYS, TIMESCALES
from metalearn.meta.estimators import truncated_backprop


def test_hand_designed_is_exactly_optax():
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    grads = {"w": jnp.ones((2, 3)) * 0.3}
    ours = HandDesigned("adam", optax.adam, lr=1e-2)
    opt = ours.optimizer(ours.init(jax.random.key(0)))
    ref = optax.adam(1e-2)
    u1, _ = opt.update(grads, opt.init(params), params, loss=1.0)
    u2, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_array_equal(u1["w"], u2["w"])


def test_mlp_lopt_update_by_hand():
    """One linear layer that reads only the (RMS-normalized) gradient feature: the update is
    -step_mult * g / rms(g)."""
    lopt = MLPLOpt(layers=0)
    theta = lopt.init(jax.random.key(0))
    w = np.zeros((lopt.num_features, 2), np.float32)
    w[0, 0] = 1.0  # direction <- gradient feature; log-magnitude 0
    theta = {"layer0": {"w": jnp.asarray(w), "b": jnp.zeros(2)}}
    opt = lopt.optimizer(theta)
    params = {"p": jnp.zeros(2)}
    g = jnp.array([1.0, 2.0])
    updates, state = opt.update({"p": g}, opt.init(params), params)
    expected = -lopt.step_mult * np.array([1.0, 2.0]) / np.sqrt(2.5)
    np.testing.assert_allclose(updates["p"], expected, rtol=1e-5)
    assert int(state.step) == 1
    np.testing.assert_allclose(state.momenta["p"][:, 0], (1 - DECAYS[0]) * g, rtol=1e-6)
    assert lopt.num_features == 2 + 2 * len(DECAYS) + 1 + len(TIMESCALES)


PROBLEM = InnerProblem("projected:base=digits,dim=8", MLP((8,)), 16)


def test_meta_gradients_through_inner_training_are_finite():
    # backprop through the learned optimizer and inner training (PES runs in the experiment test)
    lopt = MLPLOpt(hidden=8)
    task = InnerTraining(lopt, PROBLEM, horizon=6)
    theta = lopt.init(jax.random.key(0))
    for est in (truncated_backprop(task, num_workers=2, truncation=3, stagger=False),):
        state = est.init(jax.random.key(1), theta)
        out = jax.jit(est.estimate)(theta, state, jax.random.key(2), 0)
        leaves = jax.tree_util.tree_leaves(out.grad)
        assert np.isfinite(float(out.loss))
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
        assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_optimization_curves_through_meta_evaluate():
    """Budgets in steps: learned and tuned hand-designed optimizers on the same runs (at step 0
    the same loss: same task, init and evaluation examples); run i's last budget is
    `train_run`'s final loss from its key; a learner of examples refuses an inner problem."""
    from metalearn import meta
    from metalearn.icl.baselines import baseline
    from metalearn.lopt.learner import OptimizerLearner, hand_designed_learner
    from metalearn.lopt.training import train_run

    lopt = MLPLOpt(hidden=4)
    theta = lopt.init(jax.random.key(0))
    learned = OptimizerLearner(lopt, theta, "lopt")
    adam = hand_designed_learner("adam", optax.adam, (1e-6, 1e-1), tune_runs=2)
    key = jax.random.key(3)
    a = meta.evaluate(learned, PROBLEM, [4, 0, 2], 3, key).get()
    b = meta.evaluate(adam, PROBLEM, [0, 2, 4], 3, key).get()
    assert (a.budget_unit, a.metric, a.budget, a.subset) == ("steps", "loss", (0, 2, 4), "all")
    assert a.per_sequence.shape == (3, 3) and b.learner == "adam(tuned lr)"
    np.testing.assert_allclose(a.per_sequence[:, 0], b.per_sequence[:, 0], rtol=1e-6)
    assert not np.allclose(a.per_sequence[:, 2], b.per_sequence[:, 2])
    _, final = train_run(lopt, theta, PROBLEM, 4, jax.random.fold_in(jax.random.split(key)[1], 1))
    np.testing.assert_allclose(a.per_sequence[1, -1], final, rtol=1e-5)
    tuned = adam.tuned(PROBLEM, [0, 2, 4], key)  # 1e-6 barely moves in 4 steps
    assert float(tuned.theta["lr"]) == pytest.approx(0.1) and tuned.name == "adam(lr=1e-01)"
    with pytest.raises(UserError, match="does not train inner problems.*optimizer steps"):
        meta.evaluate(baseline("knn"), PROBLEM, [0, 2], 3, key)
    with pytest.raises(UserError, match="length and metrics apply to task families"):
        meta.evaluate(learned, PROBLEM, [0, 4], 3, key, length=3)


def test_lopt_experiment_end_to_end(tmp_path, capsys):
    out = tmp_path / "lopt"
    argv = [
        "train",
        "lopt_mlp",
        "--out",
        str(out),
        "--set",
        "problems=projected:base=digits,dim=8|8|16",
        "--set",
        "rescale=1",
        "--set",
        "min_batch=8",
        "--set",
        "lopt_hidden=8",
        "--set",
        "horizon=6",
        "--set",
        "truncation=3",
        "--set",
        "num_workers=2",
        "--set",
        "loop.steps=3",
        "--set",
        "loop.progress=false",
        "--set",
        "eval.problems=train",
        "--set",
        "eval.optional=",  # the default's MNIST problems would dominate the test's time
        "--set",
        "eval.seeds=2",
        "--set",
        "eval.tune_seeds=1",
        "--set",
        "eval.every=2",
    ]
    assert main(argv) == 0
    records = json.loads((out / "results.json").read_text())
    assert {r["budget_unit"] for r in records} == {"steps"}
    assert records[0]["learner"] == "lopt" and records[1]["learner"].startswith("adam(lr=")
    assert all(r["num_sequences"] == 2 for r in records)
    text = capsys.readouterr().out
    assert "final training loss after 6 steps" in text and "mlp[8] batch 16" in text
    # the examples protocol: the learned optimizer in the same table as a baseline
    res = tmp_path / "examples.json"
    argv = ["eval", "--learner", str(out), "--learner", "knn", "--family", "train"]
    assert main([*argv, "--sequences", "4", "--budgets", "0,3", "--out", str(res)]) == 0
    records = json.loads(res.read_text())
    # an optimizer training an MLP on the examples has probabilities: its calibration too
    metrics = [(r["learner"], r["metric"]) for r in records]
    assert metrics == [
        *(("lopt", m) for m in ("accuracy", "nll", "brier", "ece")),
        ("knn", "accuracy"),
    ]
    assert {r["budget_unit"] for r in records} == {"examples"}
    # optimization curves from the command line: the run and tuned Adam on an inner problem
    problem = ["--family", "projected:base=digits,dim=8|8|16", "--sequences", "2"]
    argv = ["eval", "--learner", str(out), "--learner", "adam", *problem, "--out", str(res)]
    assert main(argv) == 0
    records = json.loads(res.read_text())
    assert [r["learner"] for r in records] == ["lopt", "adam(tuned lr)"]
    assert records[0]["budget"] == [0, 1, 2, 4, 6]  # up to the run's horizon
    assert {(r["budget_unit"], r["metric"]) for r in records} == {("steps", "loss")}


def test_lopt_experiment_adds_sampled_problems():
    """`sampled` draws extra training problems; 'train' evaluates them without augmentations."""
    from metalearn.experiments.lopt_mlp import Config
    from metalearn.lopt import ConvNet, ProblemFamily

    family = ProblemFamily(
        families=("images:base=digits",),
        kinds=("conv",),
        widths=(4, 4),
        depths=(1, 1),
        batches=(16, 16),
    )
    cfg = Config(
        problems=("projected:base=digits,dim=8|8|16",),
        sampled=2,
        sample=family,
        rescale=1.0,
        min_batch=8,
    )
    problems = cfg.training_problems()
    assert [p.spec for p in problems] == [
        "projected:base=digits,dim=8|8|16",
        *["images:base=digits|conv:4|16"] * 2,
    ]
    assert all(p.rescale == 1.0 and p.min_batch == 8 for p in problems)
    held = [p for p, _ in cfg.held_out()]
    assert held[2].model == ConvNet((4,)) and held[2].rescale == 0 and held[2].min_batch == 0
    assert held[2].label == "conv[4] batch 16 on images:base=digits"
    with pytest.raises(UserError, match="sampled must be >= 0"):
        Config(sampled=-1).training_problems()


def test_optimizer_learner_sees_only_the_first_k_examples():
    from metalearn import data
    from metalearn.lopt.learner import hand_designed_learner

    family = data.from_spec("random:dim=3,num_classes=4,items=6")
    learner = hand_designed_learner("sgd", optax.sgd, 0.5, hidden=(), steps=5)
    predict = learner.predictor(family, 6, [0, 2, 5], jax.random.key(0))
    batch = family.sample(jax.random.key(1), 4, 6)
    pred = predict(batch.x, batch.y).value
    # examples from index k on (the query k included) cannot change the budget-k prediction
    x2 = batch.x.at[:, 2:].set(batch.x[:, 2:] * -3.0)
    y2 = (batch.y + 1) % 4
    moved = predict(x2.at[:, 2].set(batch.x[:, 2]), y2.at[:, :2].set(batch.y[:, :2])).value
    np.testing.assert_array_equal(moved[:, 1], pred[:, 1])
    tuned = hand_designed_learner("sgd", optax.sgd, (1e-3, 1.0), hidden=(), steps=5)
    assert tuned.name == "sgd(tuned lr)"
    assert tuned.predictor(family, 6, [0, 5], jax.random.key(0))(batch.x, batch.y).value.shape == (
        4,
        2,
    )


@pytest.mark.parametrize(
    "bad, words",
    [
        (["--set", "estimator=magic"], ["estimator", "'magic'", "pes"]),
        (["--set", "lopt=velo9"], ["lopt", "'velo9'"]),
    ],
)
def test_lopt_experiment_bad_input(tmp_path, capsys, bad, words):
    assert main(["train", "lopt_mlp", "--out", str(tmp_path / "x"), *bad]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err
