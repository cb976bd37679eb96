"""Regime labels and thresholds from small synthetic sweep tables."""

from __future__ import annotations

import pandas as pd
import pytest

from metalearn.core.errors import UserError
from metalearn.transitions import (
    INSTANCE,
    LEARNING,
    TASK,
    TRANSITION,
    closer_to,
    is_learning,
    regimes,
    threshold,
)

POOLS = ["1", "4", "16", "64", "none"]


def _rows(pool, width, seen, unseen, se=0.01, seed=0):
    """Table rows of one point: (first, last) accuracy on seen and unseen tasks."""
    subsets = {"all": seen} if pool == "none" else {"seen": seen, "unseen": unseen}
    return [
        {
            "family.num_tasks": pool,
            "model.width": width,
            "seed": seed,
            "status": "done",
            "learner": "model",
            "metric": "accuracy",
            "training_family": True,
            "subset": subset,
            "budget": budget,
            "mean": value,
            "stderr": se,
        }
        for subset, (first, last) in subsets.items()
        for budget, value in ((0, first), (9, last))
    ]


def _table(cells):
    return pd.DataFrame([r for args in cells for r in _rows(*args)])


def test_each_regime_from_its_numbers():
    frame = _table(
        [
            ("1", "8", (0.2, 0.21), (0.2, 0.2)),  # nothing improves beyond 2 SE
            ("4", "8", (0.2, 0.9), (0.2, 0.21)),  # the pool's tasks are learned, not unseen
            ("16", "8", (0.2, 0.9), (0.2, 0.5)),  # unseen improve, far below seen
            ("64", "8", (0.2, 0.8), (0.2, 0.79)),  # unseen as good as seen
            ("none", "8", (0.2, 0.7), None),  # fresh tasks only: 'all' serves as both
            # one memorized task: seen right from budget 0; unseen gain a little, far below
            ("2", "8", (1.0, 1.0), (0.08, 0.11), 0.005),
        ]
    )
    labels = regimes(frame, ["family.num_tasks", "model.width"])
    assert list(labels["regime"]) == [INSTANCE, INSTANCE, TASK, TRANSITION, LEARNING, LEARNING]
    row = labels.iloc[2]
    assert row["seen_gain"] == pytest.approx(0.7)
    assert row["seen_gain_se"] == pytest.approx(0.01 * 2**0.5)
    # a margin widens what counts as "as good as seen"
    wide = regimes(frame, ["family.num_tasks", "model.width"], margin=0.5)
    assert wide.iloc[3]["regime"] == LEARNING


def test_standard_errors_decide_what_counts_as_an_improvement():
    frame = _table([("4", "8", (0.2, 0.25), (0.2, 0.2), 0.02)])  # a gain of 1.8 SE
    assert regimes(frame, ["family.num_tasks"]).iloc[0]["regime"] == INSTANCE
    frame = _table([("4", "8", (0.2, 0.25), (0.2, 0.2), 0.01)])  # the same gain, 3.5 SE
    assert regimes(frame, ["family.num_tasks"]).iloc[0]["regime"] == TASK


def test_seeds_are_averaged_with_their_errors_combined():
    frame = pd.concat(
        [
            _table([("4", "8", (0.2, 0.9), (0.2, 0.3), 0.04, 0)]),
            _table([("4", "8", (0.2, 0.7), (0.2, 0.3), 0.04, 1)]),
        ]
    )
    row = regimes(frame, ["family.num_tasks"]).iloc[0]
    assert row["seen_last"] == pytest.approx(0.8)
    assert row["seen_last_se"] == pytest.approx(0.04 / 2**0.5)  # sqrt(2 x 0.04^2) / 2


def test_threshold_is_the_crossing_after_which_it_stays():
    regime = {"1": TASK, "4": LEARNING, "16": TASK, "64": LEARNING, "none": LEARNING}
    frame = _table(
        [
            (pool, width, (0.2, 0.9), (0.2, 0.9 if regime[pool] == LEARNING else 0.2))
            for pool in POOLS
            for width in ("8", "32")
        ]
    )
    labels = regimes(frame, ["family.num_tasks", "model.width"])
    found = threshold(labels, "family.num_tasks", ["model.width"], holds=is_learning)
    assert found == {("8",): "64", ("32",): "64"}  # 4 does not count: 16 falls back


def test_a_grid_with_no_transition_has_no_threshold():
    frame = _table([(pool, "8", (0.2, 0.9), (0.2, 0.2)) for pool in POOLS[:-1]])
    labels = regimes(frame, ["family.num_tasks"])
    assert set(labels["regime"]) == {TASK}
    assert threshold(labels, "family.num_tasks", holds=is_learning) == {(): None}
    # everything learning-to-learn: the threshold is the smallest pool (at or below it)
    frame = _table([(pool, "8", (0.2, 0.9), (0.2, 0.9)) for pool in POOLS])
    labels = regimes(frame, ["family.num_tasks"])
    assert threshold(labels, "family.num_tasks", holds=is_learning) == {(): "1"}


def _distances(pool, ridge, dmmse, se=0.01):
    return [
        {
            "family.num_tasks": pool,
            "status": "done",
            "learner": "model",
            "metric": f"distance_to_{name}",
            "training_family": True,
            "subset": "unseen",
            "budget": budget,
            "mean": value if budget else 0.0,
            "stderr": se,
            "seed": 0,
        }
        for name, value in (("ridge", ridge), ("dmmse", dmmse))
        for budget in (0, 1, 2)
    ]


def test_closer_to_ridge_or_dmmse_and_its_threshold():
    frame = pd.DataFrame(
        [
            r
            for args in [("2", 0.9, 0.1), ("8", 0.5, 0.3), ("32", 0.2, 0.6), ("128", 0.1, 0.8)]
            for r in _distances(*args)
        ]
    )
    near = closer_to(frame, ["family.num_tasks"])
    assert list(near["closer"]) == ["dmmse", "dmmse", "ridge", "ridge"]
    assert near.iloc[0]["distance_to_ridge"] == pytest.approx(0.9)  # budget 0 left out
    holds = lambda r: r["closer"] == "ridge"  # noqa: E731
    assert threshold(near, "family.num_tasks", holds=holds) == {(): "32"}
    assert near["clear"].all()
    # within two standard errors: closer by the means, but not clearly
    tie = closer_to(pd.DataFrame(_distances("2", 0.50, 0.51)), ["family.num_tasks"])
    assert tie.iloc[0]["closer"] == "ridge" and not tie.iloc[0]["clear"]


def test_bad_tables_get_one_clear_line():
    with pytest.raises(UserError, match="lacks the columns"):
        regimes(pd.DataFrame({"x": [1]}), ["x"])
    frame = _table([("4", "8", (0.2, 0.9), (0.2, 0.2))])
    with pytest.raises(UserError, match="'model.depth' is not a column"):
        regimes(frame, ["model.depth"])
    with pytest.raises(UserError, match="no finished 'model' rows with metric 'mse'"):
        regimes(frame, ["family.num_tasks"], metric="mse")
