"""Data parallelism: the same training on eight (simulated) devices matches one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    from metalearn import data
    from metalearn.icl.learner import InContextLearner, ModelConfig, SequenceObjective
    from metalearn.meta.objective import backprop
    from metalearn.meta.sharding import shard_tasks, task_mesh

    fam = data.make("linear_regression", dim=3, noise=0.1)
    learner = InContextLearner.for_family(ModelConfig(depth=1, width=16, heads=2), fam, 8)
    obj = SequenceObjective(learner, fam, batch_size=8, length=8)
    theta = obj.init(jax.random.key(0))
    with jax.set_mesh(task_mesh()):
        est = jax.jit(backprop(obj).estimate)(theta, (), jax.random.key(1), 0)
        x = jax.jit(lambda k: shard_tasks(obj.sample(k, 0)).x)(jax.random.key(1))
    grad = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(est.grad)])
    print(json.dumps({"devices": jax.device_count(), "loss": float(est.loss),
                      "grad": grad.tolist(), "batch_shards": len(x.sharding.device_set)}))
    """
)


ESTIMATES = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np
    from metalearn.meta.estimators import ESTIMATORS
    from metalearn.meta.sharding import task_mesh

    class Linear:  # s <- 0.9 s + theta x, loss (s . 1 - 1)^2: a small truncated task
        horizon = 12
        def init(self, key):
            return jax.random.normal(key, (5,))
        def step(self, theta, s, key):
            s = 0.9 * s + theta * jax.random.normal(key, (5,))
            return s, (s.sum() - 1.0) ** 2

    out = {"devices": jax.device_count()}
    with jax.set_mesh(task_mesh()):
        for name in ("pes", "nres"):
            est = ESTIMATORS[name](Linear(), num_workers=8, truncation=3, sigma=0.1)
            theta = jnp.float32(0.3)
            state = jax.jit(est.init)(jax.random.key(0), theta)
            e = jax.jit(est.estimate)(theta, state, jax.random.key(1), 0)
            out[name] = [float(e.loss), float(e.grad)]
            out[name + "_shards"] = len(e.state.pos.inner.sharding.device_set)
    print(json.dumps(out))
    """
)


def _run(devices: int, script: str = SCRIPT) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_devices_split_the_tasks_and_match_one():
    one, eight = _run(1), _run(8)
    assert one["devices"] == 1 and eight["devices"] == 8
    assert eight["batch_shards"] == 8  # the task axis really is split across the devices
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(eight["grad"], one["grad"], rtol=1e-4, atol=1e-6)


def test_eight_devices_split_the_workers_of_pes_and_nres_and_match_one():
    one, eight = _run(1, ESTIMATES), _run(8, ESTIMATES)
    assert one["devices"] == 1 and eight["devices"] == 8
    for name in ("pes", "nres"):
        assert eight[f"{name}_shards"] == 8  # each device holds one of the eight workers
        np.testing.assert_allclose(eight[name], one[name], rtol=1e-5, atol=1e-6)
