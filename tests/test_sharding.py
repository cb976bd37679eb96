"""Data parallelism: the same training on eight (simulated) devices matches one device."""

from __future__ import annotations

import textwrap

import numpy as np

from tests.helpers import run_on_devices

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
    return run_on_devices(script, devices)


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


FSDP = textwrap.dedent(
    """
    import json, sys, tempfile, jax, numpy as np
    from metalearn import data
    from metalearn.icl.learner import InContextLearner, ModelConfig, SequenceObjective
    from metalearn.meta.loop import LoopConfig, meta_train
    from metalearn.meta.objective import backprop
    from metalearn.meta.optim import OptimConfig

    fam = data.make("linear_regression", dim=3, noise=0.1)
    learner = InContextLearner.for_family(ModelConfig(depth=1, width=16, heads=2), fam, 8)
    obj = SequenceObjective(learner, fam, batch_size=8, length=8)
    shard = sys.argv[1] == "1"
    with tempfile.TemporaryDirectory() as d:
        loop = LoopConfig(steps=4, log_every=1, checkpoint_every=2, progress=False,
                          shard_params=shard)
        out = meta_train(obj.init, backprop(obj), OptimConfig(), loop, d)
        log = [json.loads(l) for l in open(d + "/metrics.jsonl")]
        # resume from the step-2 checkpoint into sharded parameters: the same last steps
        import shutil; shutil.rmtree(d + "/checkpoints/4")
        again = meta_train(obj.init, backprop(obj), OptimConfig(), loop, d, resume=True)
    kernel = out.theta["blocks"][0]["fc"]["kernel"]
    size = lambda t: float(sum(np.abs(x).sum() for x in jax.tree_util.tree_leaves(t)))
    print(json.dumps({"loss": [r["loss"] for r in log], "theta": size(out.theta),
                      "again": size(again.theta),
                      "kernel_shards": len(kernel.sharding.device_set),
                      "kernel_slice": list(kernel.addressable_shards[0].data.shape)}))
    """
)


def test_sharded_parameters_train_as_replicated_ones():
    """FSDP-style `loop.shard_params` on eight devices: each device keeps a slice of each big
    tensor, the loss curve is the replicated one's, and a checkpoint resumes into slices."""
    one = _run(1, FSDP.replace("sys.argv[1]", "'0'"))
    eight = _run(8, FSDP.replace("sys.argv[1]", "'1'"))
    assert eight["kernel_shards"] == 8 and eight["kernel_slice"] == [16, 8]  # 64 split by 8
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(eight["theta"], one["theta"], rtol=1e-5)
    np.testing.assert_allclose(eight["again"], eight["theta"], rtol=1e-6)
