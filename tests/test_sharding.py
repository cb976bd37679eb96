"""Data parallelism: the same training on two (simulated) devices matches one device."""

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
    import data
    from icl.learner import InContextLearner, ModelConfig, SequenceObjective
    from meta.objective import Backprop
    from meta.sharding import shard_tasks, task_mesh

    fam = data.make("linear_regression", dim=3, noise=0.1)
    learner = InContextLearner.for_family(ModelConfig(depth=1, width=16, heads=2), fam, 8)
    obj = SequenceObjective(learner, fam, batch_size=8, length=8)
    theta = obj.init(jax.random.key(0))
    with jax.set_mesh(task_mesh()):
        est = jax.jit(Backprop(obj).estimate)(theta, (), jax.random.key(1), 0)
        x = jax.jit(lambda k: shard_tasks(obj.sample(k, 0)).x)(jax.random.key(1))
    grad = np.concatenate([np.ravel(g) for g in jax.tree_util.tree_leaves(est.grad)])
    print(json.dumps({"devices": jax.device_count(), "loss": float(est.loss),
                      "grad": grad.tolist(), "batch_shards": len(x.sharding.device_set)}))
    """
)


def _run(devices: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_devices_split_the_tasks_and_match_one():
    one, two = _run(1), _run(2)
    assert one["devices"] == 1 and two["devices"] == 2
    assert two["batch_shards"] == 2  # the task axis really is split across the devices
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["grad"], one["grad"], rtol=1e-4, atol=1e-6)
