"""Every registered component gets a smoke-and-determinism test the day it is registered:
each registry is compared with the small settings below, so a new entry without them fails."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from metalearn import data, runs
from metalearn.learners import LEARNERS
from metalearn.lopt import HAND_DESIGNED, MLP, HandDesigned, InnerProblem
from metalearn.lopt.training import train_run

# experiment -> overrides that make one meta-training step cheap (shapes shared with the other
# tests where possible, so compilations are shared through the persistent cache)
ICL_SMALL = [
    "length=8",
    "eval.budgets=0;3;7",
    "batch_size=16",
    "model.depth=1",
    "model.width=16",
    "model.heads=2",
]
EXPERIMENTS = {
    "quickstart": ["family=projected:base=digits,dim=8", *ICL_SMALL],
    "linreg": ["family=linear_regression:dim=3,noise=0.5", *ICL_SMALL],
    "bursty_icl": [
        "family=bursty:dim=8,classes=20,heldout=4,num_classes=4",
        "length=6",
        "eval.budgets=0;5",
        "batch_size=16",
        "model.depth=1",
        "model.width=16",
    ],
    "garg_shifts": ["family=linear_regression:dim=3,noise=0", *ICL_SMALL],
    "lopt_mlp": [
        "problems=projected:base=digits,dim=8||16",  # a linear model: two tensors to update
        "lopt_hidden=8",
        "horizon=6",
        "truncation=3",
        "num_workers=2",
        "eval.optional=",
    ],
    "logistic_map": ["num_workers=4", "horizon=10", "truncation=5"],
    "task_diversity": ["family=linear_regression:dim=3,noise=0.5,num_tasks=4", *ICL_SMALL],
    "gpicl_transition": ["family=projected:base=digits,dim=8,num_tasks=4", *ICL_SMALL],
    "gpicl_plateau": ["family=projected:base=digits,dim=8,bias=0.2", *ICL_SMALL],
    "gpicl_scaling": ["family=projected:base=digits,dim=8", *ICL_SMALL],
    # the learned optimizer's row: its meta-training, small (the report is tested apart)
    "gpicl_generalization": [
        "family=projected:base=digits,dim=8",
        "length=8",
        "eval.budgets=0;3;7",
        "eval.families=train",
        "eval.optional=",
        "variant=lopt",
        "lopt.problems=projected:base=digits,dim=8||16",
        "lopt.lopt_hidden=8",
        "lopt.horizon=6",
        "lopt.truncation=3",
        "lopt.num_workers=2",
        "lopt.eval.optional=",
    ],
    # a variant replaces the model: fast weights, the kind no other experiment trains
    "gpicl_state_size": [
        "family=projected:base=digits,dim=8",
        "length=8",
        "eval.budgets=0;3;7",
        "batch_size=16",
        "variant=fw2",
    ],
    # local updates in two stages, the one experiment that trains a LocalTransformer
    "local_updates": [
        "family=linear_regression:dim=3,noise=0.5",
        "length=8",
        "eval.budgets=0;3;7",
        "batch_size=16",
        "model.depth=2",
        "model.width=16",
        "model.heads=2",
        "variant=local2",
    ],
}


def test_every_registry_entry_has_small_settings():
    assert set(EXPERIMENTS) == set(runs.list_experiments())
    from tests.test_families import SPECS

    assert {data.parse_spec(s)[0] for s in SPECS} == set(data.FAMILIES)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_takes_a_finite_repeatable_step(name):
    setup = runs.make_config(name, EXPERIMENTS[name]).setup()
    theta = setup.init(jax.random.key(0))
    step = jax.jit(setup.estimator.estimate)
    estimates = [
        step(theta, setup.estimator.init(jax.random.key(1), theta), jax.random.key(2), 0)
        for _ in range(2)
    ]
    grads = [
        np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(e.grad)]) for e in estimates
    ]
    assert np.isfinite(float(estimates[0].loss)) and np.isfinite(grads[0]).all()
    np.testing.assert_array_equal(grads[0], grads[1])
    assert float(estimates[0].loss) == float(estimates[1].loss)


@pytest.mark.parametrize("name", sorted(HAND_DESIGNED))
def test_every_hand_designed_optimizer_trains_repeatably(name):
    opt = HandDesigned(name, HAND_DESIGNED[name], lr=1e-2)
    problem = InnerProblem("projected:base=digits,dim=8", MLP((8,)), 16)
    run = jax.jit(lambda key: train_run(opt, opt.init(key), problem, 4, key))
    (losses, final), (again, _) = run(jax.random.key(0)), run(jax.random.key(0))
    assert np.isfinite(np.asarray(losses)).all() and np.isfinite(float(final))
    np.testing.assert_array_equal(losses, again)


def test_every_learner_name_resolves():
    """The application layer's `--learner` names: every in-context baseline and every
    hand-designed optimizer, no name claimed twice."""
    from metalearn.icl.baselines import BASELINES

    assert set(LEARNERS) == set(BASELINES) | set(HAND_DESIGNED)
    assert not set(BASELINES) & set(HAND_DESIGNED)
    for name, (make, line) in LEARNERS.items():
        assert make().name.startswith(name) and line
