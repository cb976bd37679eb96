"""GPICL's Table 1 as a sweep: its variants' rows, the learned optimizer's report on task
families, and `metalearn table`'s pivot of a sweep's results."""

from __future__ import annotations

import json

import jax
import pandas as pd
import pytest

from metalearn import runs
from metalearn.core.errors import UserError
from metalearn.sweep_table import learner_table

SMALL = [
    "family=projected:base=digits,dim=8",
    "length=8",
    "eval.budgets=0;3;7",
    "eval.sequences=16",
    "eval.families=train;random:dim={dim},num_classes={num_classes},items=3",
    "eval.optional=projected:base=no_such_dataset,dim={dim}",
    "lopt.problems=projected:base=digits,dim=8||16",
    "lopt.lopt_hidden=8",
    "lopt.horizon=6",
    "lopt.truncation=3",
    "lopt.num_workers=2",
]


def test_the_learned_optimizer_row_trains_an_mlp_on_each_family(tmp_path, capsys):
    setup = runs.make_config("gpicl_generalization", [*SMALL, "variant=lopt"]).setup()
    curves = setup.report(setup.init(jax.random.key(0)), tmp_path, "lopt")
    families = {c.family for c in curves}
    assert len(families) == 2 and {c.learner for c in curves} == {"lopt"}  # no baselines here
    accuracy = [c for c in curves if c.metric == "accuracy"]
    assert all(c.budget == (0, 3, 7) and c.per_sequence.shape == (16, 3) for c in accuracy)
    assert "skipping optional family projected:base=no_such_dataset" in capsys.readouterr().out
    assert (tmp_path / "table.txt").exists()


def test_baselines_are_evaluated_in_the_transformer_point_only():
    for variant, kind, baselines in (
        ("transformer", "transformer", ("knn", "logistic_sgd", "logistic_adam")),
        ("lstm", "lstm", ()),
        ("fast_weights", "fast_weights", ()),
    ):
        config = runs.make_config("gpicl_generalization", [*SMALL, f"variant={variant}"])
        resolved = config.resolved()
        assert resolved.model.kind == kind and resolved.eval.baselines == baselines
        assert resolved.model.shift and resolved.variant == ""
    with pytest.raises(UserError, match="variant must be one of transformer, lstm"):
        runs.make_config("gpicl_generalization", [*SMALL, "variant=gru"]).setup()


def _fake_sweep(tmp_path, seeds=(0,)):
    rows = []
    for seed in seeds:
        for learner, variant, acc in (
            ("model", "transformer", 0.7),
            ("knn", "transformer", 0.6),
            ("model", "lstm", 0.5),
        ):
            for family, base in (("projected:base=mnist,dim=8", "m"), ("random:dim=8", "r")):
                for budget in (0, 9):
                    rows.append(
                        dict(
                            variant=variant,
                            seed=seed,
                            learner=learner,
                            family=family,
                            subset="all",
                            metric="accuracy",
                            budget=budget,
                            mean=acc + (budget == 9) * 0.1 + (base == "r") * 0.01 + seed * 0.001,
                            stderr=0.02,
                        )
                    )
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet")
    (tmp_path / "sweep.json").write_text(
        json.dumps({"experiment": "x", "grid": {"variant": ["transformer", "lstm"]}})
    )
    return tmp_path


def test_table_pivots_learners_by_families_at_one_budget(tmp_path):
    text = learner_table(_fake_sweep(tmp_path), budget=9)
    lines = text.splitlines()
    assert lines[1].split() == ["mnist", "random"]
    assert [line.split()[0] for line in lines[2:]] == ["transformer", "lstm", "knn"]
    assert lines[2].split()[1:] == ["0.800", "±", "0.020", "0.810", "±", "0.020"]
    assert lines[3].split()[1] == "0.600" and lines[4].split()[1] == "0.700"
    assert (tmp_path / "table.txt").read_text() == text + "\n"
    assert learner_table(tmp_path, budget=0).splitlines()[2].split()[1] == "0.700"


def test_table_names_seeds_and_refuses_what_the_sweep_lacks(tmp_path):
    text = learner_table(_fake_sweep(tmp_path, seeds=(0, 1)))
    assert "transformer (seed 1)" in text and "mnist @9" in text
    with pytest.raises(UserError, match="--metric 'nll' is not in the sweep"):
        learner_table(tmp_path, metric="nll")
    with pytest.raises(UserError, match="--budget 5 was not evaluated"):
        learner_table(tmp_path, budget=5)
    with pytest.raises(UserError, match="is not a finished sweep directory"):
        learner_table(tmp_path / "nothing")


def test_table_columns_hold_a_family_whatever_option_the_grid_varies(tmp_path):
    rows = [
        dict(
            **{"family.burstiness": b},
            seed=0,
            learner="model",
            family=f"bursty:burstiness={b},mode={mode}",
            subset="all",
            metric="accuracy",
            budget=8,
            mean=acc,
            stderr=0.01,
        )
        for b, mode, acc in ((0.9, "fewshot", 0.98), (0.9, "absent", 0.7), (0.0, "absent", 0.8))
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet")
    (tmp_path / "sweep.json").write_text(
        json.dumps({"experiment": "x", "grid": {"family.burstiness": [0.9, 0.0]}})
    )
    lines = learner_table(tmp_path).splitlines()
    assert lines[1].split() == ["bursty", "@8", "bursty:mode=absent", "@8"]
    assert lines[3].split() == ["0.0", "-", "0.800", "±", "0.010"]
