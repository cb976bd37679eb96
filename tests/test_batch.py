"""Points trained together as one vmapped model (meta.batch) against the same points alone.

Tolerances, stated: a batched member draws exactly the data it draws alone; XLA may round the
sums of a batched matmul differently, so over 30 steps its training losses agree to 1e-5
relative and its evaluation (the same 60 sequences) to 1e-4 in each budget's mean. Parameters
that get no gradient in exact arithmetic (an attention layer's key bias: softmax ignores a
constant shift) follow the float noise under Adam's small eps, so they are not compared;
what the model computes is.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from metalearn import data, runs, sweep
from metalearn.cli import main
from metalearn.core.errors import UserError
from metalearn.meta.batch import batch_key, meta_train_batch
from metalearn.meta.logs import read_metrics

POOL = "projected:base=digits,dim=8,num_tasks={}"
BASE = [
    "length=8",
    "batch_size=16",
    "model.depth=1",
    "model.width=16",
    "loop.steps=30",
    "loop.log_every=1",
    "loop.checkpoint_every=10",
    "loop.progress=false",
    "eval.sequences=60",
    "eval.budgets=0;3;7",
]
# members differing in pool size, seed and learning rate: each is one batch member
MEMBERS = [
    [f"family={POOL.format(1)}"],
    [f"family={POOL.format(64)}", "loop.seed=3"],
    [f"family={POOL.format(4)}", "optim.lr=1e-3"],
]


def _config(extra):
    return runs.make_config("gpicl_transition", [*BASE, *extra])


def _losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_pool_size_as_an_array_draws_the_same_sequences():
    family = data.from_spec(POOL.format(256) + ",bias=0.2")
    key = jax.random.key(3)
    for subset in (None, "seen", "unseen"):
        alone = family.sample(key, 32, 8, subset)
        sizes = jnp.array([256, 7], jnp.int32)
        batched = jax.vmap(lambda s, sub=subset: family.with_pool_size(s).sample(key, 32, 8, sub))(
            sizes
        )
        other = data.from_spec(POOL.format(7) + ",bias=0.2").sample(key, 32, 8, subset)
        for a, o, b in zip(alone, other, batched, strict=True):
            assert np.array_equal(a, b[0]) and np.array_equal(o, b[1])
    with pytest.raises(UserError, match="unlimited tasks"):
        data.from_spec("projected:base=digits,dim=8").with_pool_size(jnp.int32(4))


def test_batched_members_train_and_evaluate_as_they_do_alone(tmp_path):
    configs = [_config(m) for m in MEMBERS]
    keys = {batch_key(c.setup()) for c in configs}
    assert len(keys) == 1 and None not in keys
    batched = runs.train_batch(configs, [tmp_path / f"b{i}" for i in range(3)])
    for i, config in enumerate(configs):
        alone = runs.train(config, tmp_path / f"a{i}")
        a, b = _losses(tmp_path / f"a{i}"), _losses(tmp_path / f"b{i}")
        assert len(a) == len(b) == 30
        np.testing.assert_allclose(b, a, rtol=1e-5)
        ra = json.loads((tmp_path / f"a{i}" / "results.json").read_text())
        rb = json.loads((tmp_path / f"b{i}" / "results.json").read_text())
        for x, y in zip(ra, rb, strict=True):
            assert (x["family"], x["subset"]) == (y["family"], y["subset"])
            np.testing.assert_allclose(y["mean"], x["mean"], atol=1e-4)
        # the batched member's run directory is an ordinary run: it loads alone
        loaded = runs.load(tmp_path / f"b{i}")
        batch = data.from_spec(config.family).sample(jax.random.key(0), 8, 8, "seen")
        out_a = alone.setup.learner(alone.theta, "a").learner.apply(alone.theta, batch.x, batch.y)
        out_b = loaded.setup.learner(loaded.theta, "b").learner.apply(
            loaded.theta, batch.x, batch.y
        )
        np.testing.assert_allclose(out_b, out_a, rtol=1e-3, atol=1e-4)
        assert batched[i].curves is not None


def test_a_diverging_member_stops_while_the_others_go_on(tmp_path):
    # lr 1e38 without clipping or warmup diverges within a few steps
    bad = ["optim.lr=1e38", "optim.clip=0", "optim.warmup=0"]
    good = ["optim.lr=1e-3", "optim.clip=0", "optim.warmup=0"]
    configs = [_config([f"family={POOL.format(4)}", *s]) for s in (good, bad)]
    results = runs.train_batch(configs, [tmp_path / "good", tmp_path / "bad"])
    assert isinstance(results[0], runs.Run) and len(_losses(tmp_path / "good")) == 30
    assert "stopped at step" in str(results[1])
    assert len(_losses(tmp_path / "bad")) < 30


def test_members_at_different_steps_are_refused_and_sweeps_train_them_apart(tmp_path):
    configs = [_config(m) for m in MEMBERS[:2]]
    dirs = [tmp_path / "p0", tmp_path / "p1"]
    runs.train(_config([*MEMBERS[0], "loop.steps=10"]), dirs[0], report=False)
    # p0 now holds a checkpoint at step 10 of a 10-step run; make it a 30-step run's
    record = json.loads((dirs[0] / "config.json").read_text())
    record["config"]["loop"]["steps"] = 30
    (dirs[0] / "config.json").write_text(json.dumps(record))
    runs.train(configs[1], dirs[1], report=False)  # p1 finished training: step 30
    setups = [c.setup() for c in configs]
    with pytest.raises(UserError, match="different steps"):
        meta_train_batch(setups, dirs, resume=[True, True])
    # the sweep's batch falls back to one point at a time, each from its own checkpoint
    statuses = sweep.run_batch(configs, dirs)
    assert [s["status"] for s in statuses] == ["done", "done"]
    assert [s["batch"] for s in statuses] == [1, 1] and all(s["resumed"] for s in statuses)
    assert [r["step"] for r in read_metrics(dirs[0] / "metrics.jsonl") if "loss" in r] == list(
        range(1, 31)
    )


def test_batches_group_alike_points_at_one_step_in_grid_order(tmp_path):
    from metalearn.sweep_engines import PointJob

    extras = [*MEMBERS, ["model.width=8"], [f"family={POOL.format(2)}"]]
    configs = [_config(m) for m in extras]
    jobs = [PointJob("gpicl_transition", (), str(tmp_path / f"p{i}")) for i in range(5)]
    setups = [c.setup() for c in configs]
    groups = sweep.batches(jobs, setups, 3)
    assert [[j.run_dir[-2:] for j in g] for g in groups] == [["p0", "p1", "p2"], ["p3"], ["p4"]]
    assert [len(g) for g in sweep.batches(jobs, setups, 2)] == [2, 2, 1]
    assert all(len(g) == 1 for g in sweep.batches(jobs, setups, 1))
    # a partly trained point batches only with points at its checkpoint step
    (tmp_path / "p1" / "checkpoints" / "10").mkdir(parents=True)
    assert [len(g) for g in sweep.batches(jobs, setups, 3)] == [3, 1, 1]


def test_a_batched_sweep_gives_the_table_of_points_alone(tmp_path, capsys):
    sets = [x for s in BASE for x in ("--set", s)]
    argv = ["sweep", "gpicl_transition", *sets, "--set", f"family={POOL.format(2)}"]
    argv += ["--grid", "family.num_tasks=1,8,none", "--grid", "model.width=16"]
    argv += ["--seeds", "2", "--set", "loop.steps=12"]
    alone, batched = tmp_path / "alone", tmp_path / "batched"
    assert main([*argv, "--out", str(alone), "--batch", "1"]) == 0
    assert main([*argv, "--out", str(batched), "--batch", "4"]) == 0
    assert "6 points: 6 done, 0 failed" in capsys.readouterr().out
    a = pd.read_parquet(alone / "results.parquet")
    b = pd.read_parquet(batched / "results.parquet")
    # the four pool points trained as one batch, the two unlimited ones as another
    sizes = b.groupby("point")["batch"].first()
    assert sorted(sizes) == [2, 2, 4, 4, 4, 4]
    assert (a["batch"] == 1).all()
    varying = ["wall_s", "steps_per_s", "batch", "mean", "final_train_loss"]
    pd.testing.assert_frame_equal(a.drop(columns=varying), b.drop(columns=varying))
    np.testing.assert_allclose(b["mean"], a["mean"], atol=1e-4)
    np.testing.assert_allclose(b["final_train_loss"], a["final_train_loss"], rtol=1e-5)
