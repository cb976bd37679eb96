"""The meta-training loop: the loss falls, resume is exact, NaN is reported."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn import data
from metalearn.core.errors import NonFiniteError
from metalearn.icl.learner import InContextLearner, ModelConfig, SequenceObjective
from metalearn.meta.logs import read_metrics
from metalearn.meta.loop import LoopConfig, meta_train
from metalearn.meta.objective import backprop
from metalearn.meta.optim import OptimConfig

FAM = data.make("linear_regression", dim=3, noise=0.1)
LEARNER = InContextLearner.for_family(ModelConfig(depth=1, width=16, heads=2), FAM, 8)
OBJ = SequenceObjective(LEARNER, FAM, batch_size=32, length=8)
LOOP = LoopConfig(steps=8, log_every=1, checkpoint_every=4, progress=False)
OPTIM = OptimConfig(lr=3e-3, warmup=2)


def _train(**kw):
    args = dict(init=OBJ.init, estimator=backprop(OBJ), optim=OPTIM, loop=LOOP)
    args.update(kw)
    return meta_train(**args)


def test_tiny_config_loss_falls():
    loop = dataclasses.replace(LOOP, steps=300, log_every=0, checkpoint_every=0)
    key = jax.random.key(42)
    held = FAM.sample(key, 256, 8)
    before = float(LEARNER.loss(OBJ.init(jax.random.split(jax.random.key(0), 3)[0]), held)[0])
    result = _train(loop=loop)
    after = float(LEARNER.loss(result.theta, held)[0])
    assert after < 0.75 * before
    # below the error of always predicting the prior mean (E y^2 = dim + noise^2): the model
    # uses the examples in its context
    assert after < 0.9 * (FAM.dim + FAM.noise**2)


def test_resume_equals_uninterrupted(tmp_path):
    full = _train(run_dir=tmp_path / "full")
    _interrupted(tmp_path / "part", LOOP, die_at=5)  # after the checkpoint at step 4
    resumed = _train(run_dir=tmp_path / "part", resume=True)
    leaves_a = jax.tree_util.tree_leaves(full.theta)
    leaves_b = jax.tree_util.tree_leaves(resumed.theta)
    assert all(np.array_equal(a, b) for a, b in zip(leaves_a, leaves_b, strict=True))
    steps = [r["step"] for r in read_metrics(tmp_path / "part" / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 9))  # no step logged twice


class _Stop(Exception):
    pass


def _interrupted(run_dir, loop, die_at):
    """Train, then die at step `die_at` as a killed run would."""

    def boom(theta):
        raise _Stop

    with pytest.raises(_Stop):
        _train(
            run_dir=run_dir, loop=dataclasses.replace(loop, eval_every=die_at), periodic_eval=boom
        )


def test_nan_is_reported_with_its_step(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Poisoned:
        """The objective's loss turns NaN from step 3 on."""

        def init(self, key):
            return OBJ.init(key)

        def sample(self, key, step):
            return OBJ.sample(key, step), step

        def loss(self, theta, batch):
            inner, step = batch
            loss, metrics = OBJ.loss(theta, inner)
            loss = jnp.where(step >= 3, jnp.nan, loss)
            return loss, {**metrics, "loss": loss}

    with pytest.raises(NonFiniteError) as e:
        _train(
            init=Poisoned().init,
            estimator=backprop(Poisoned()),
            loop=dataclasses.replace(LOOP, log_every=1),
            run_dir=tmp_path,
        )
    # index 3 is the fourth step: metrics.jsonl's last record is step 3, the NaN is step 4
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    assert e.value.step == 4 and e.value.quantity == "loss"
    assert "step 4" in str(e.value) and "nan" in str(e.value)
