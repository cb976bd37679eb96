"""Chaos diagnostics and the logistic-map toy: a user system in a few lines, meta-trained and
diagnosed by the backbone."""

from __future__ import annotations

import json

import jax
import pytest

from metalearn.cli import main
from metalearn.core.errors import UserError
from metalearn.experiments.logistic_map import LogisticMap
from metalearn.meta.chaos import diagnose


def test_chaos_command_writes_files_and_shows_exploding_gradients(tmp_path, capsys):
    out = tmp_path / "chaos"
    argv = ["chaos", "logistic_map", "--lengths", "5,40", "--samples", "128", "--sigma", "0.05"]
    assert main([*argv, "--estimators", "pes,nres,full_es", "--out", str(out)]) == 0
    points = json.loads((out / "chaos.json").read_text())
    assert (out / "chaos.png").stat().st_size > 0 and "exact" in capsys.readouterr().out
    var = {(p["estimator"], p["length"]): p["variance"] for p in points}
    assert set(var) == {(e, t) for e in ("exact", "pes", "nres", "full_es") for t in (5, 40)}
    # r = 3.7 is chaotic: the exact gradient's variance explodes with the length, ES does not
    assert var[("exact", 40)] > 1e4 * var[("exact", 5)]
    for name in ("pes", "nres", "full_es"):
        assert var[(name, 40)] < 1e-3 * var[("exact", 40)]


def test_logistic_map_meta_training_finds_the_fixed_point(tmp_path, capsys):
    argv = ["train", "logistic_map", "--out", str(tmp_path / "lm"), "--set", "loop.progress=0"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    r = float(text.split("r = ")[1].split()[0])
    assert abs(r - 1 / 0.7) < 0.02  # from 3.7, through the chaotic regime


def test_chaos_bad_input():
    with pytest.raises(UserError, match="samples must be >= 2"):
        diagnose(LogisticMap(), 3.7, [10], 1, jax.random.key(0))
    with pytest.raises(UserError, match="unknown estimators"):
        diagnose(LogisticMap(), 3.7, [10], 8, jax.random.key(0), estimators=["magic"])
    with pytest.raises(UserError, match="horizon"):
        diagnose(object(), 3.7, [10], 8, jax.random.key(0))


def test_spread_a_chunk_at_a_time_equals_all_at_once():
    import numpy as np

    from metalearn.meta.chaos import _Moments

    grads = {
        "a": jax.random.normal(jax.random.key(0), (20, 3, 2)) * 3 + 1,
        "b": jax.random.normal(jax.random.key(1), (20,)),
    }
    flat = np.concatenate([np.asarray(g, np.float64).reshape(20, -1) for g in grads.values()], 1)
    moments = _Moments()
    for lo, hi in ((0, 8), (8, 16), (16, 20)):
        moments.add(jax.tree_util.tree_map(lambda g, lo=lo, hi=hi: g[lo:hi], grads))
    var, mean_sq = moments.spread()
    np.testing.assert_allclose(var, flat.var(0, ddof=1).sum(), rtol=1e-10)
    np.testing.assert_allclose(mean_sq, (flat.mean(0) ** 2).sum(), rtol=1e-10)


def test_chunked_diagnosis_reports_progress_and_is_repeatable():
    lines = []
    run = lambda: diagnose(  # noqa: E731
        LogisticMap(),
        3.7,
        [5],
        20,
        jax.random.key(0),
        5,
        0.05,
        ["pes"],
        chunk=8,
        progress=lines.append,
    )
    first = run()
    assert [(p.estimator, p.samples) for p in first] == [("exact", 20), ("pes", 20)]
    assert len(lines) == 2 and "pes" in lines[1] and "so far" in lines[1]
    assert run() == first  # the same key gives the same numbers
