"""Local updates (icl/local.py, meta/local_updates.py): gradients stop at stage boundaries, overlap
trains the shared layer twice, the pipeline over devices gives the one-device gradient."""

from __future__ import annotations

import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.icl.learner import InContextLearner, ModelConfig
from metalearn.icl.tokens import tokens
from tests.helpers import run_on_devices

FAMILY = data.from_spec("linear_regression:dim=3,noise=0.1")


def learner(**model) -> InContextLearner:
    return InContextLearner.for_family(ModelConfig(width=16, heads=2, **model), FAMILY, 8)


@pytest.fixture(scope="module")
def batch():
    return FAMILY.sample(jax.random.key(1), 6, 8)


def close(a, b) -> bool:
    return all(
        np.allclose(x, y, rtol=1e-5, atol=1e-7)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def block_loss(lr: InContextLearner, theta, batch, k: int) -> jax.Array:
    """Stage k's own loss, differentiable in everything (no surrogate)."""
    outs = nnx.merge(lr.graphdef, theta).local_outputs(tokens(batch.x, batch.y, None))
    return lr.output_loss(outs[k][..., 0], batch.y)[0]


def test_each_stage_is_trained_by_its_own_loss_alone(batch):
    lr = learner(depth=2, local_blocks=2)
    theta = lr.init(jax.random.key(0))
    (loss, metrics), grad = jax.value_and_grad(lr.loss, has_aux=True)(theta, batch)
    # the reported loss is the model's own: its prediction's error
    own = jnp.mean((lr.apply(theta, batch.x, batch.y) - batch.y) ** 2)
    np.testing.assert_allclose(loss, own, rtol=1e-5)
    np.testing.assert_allclose(metrics["block1_loss"], own, rtol=1e-5)
    g0 = jax.grad(lambda t: block_loss(lr, t, batch, 0))(theta)
    g1 = jax.grad(lambda t: block_loss(lr, t, batch, 1))(theta)
    assert close(grad["stages"][0], g0["stages"][0])
    assert close(grad["embedding"], g0["embedding"])
    assert close(grad["stages"][1], g1["stages"][1])
    # with the boundary stopped, stage 1's loss sends nothing back to stage 0
    assert all(np.all(g == 0) for g in jax.tree_util.tree_leaves(g1["stages"][0]))
    # global backprop through the same layers trains stage 0 on the final loss instead
    glob = jax.grad(lambda t: lr.output_loss(lr.apply(t, batch.x, batch.y), batch.y)[0])(theta)
    assert not close(grad["stages"][0]["blocks"], glob["stages"][0]["blocks"])


def test_overlap_trains_the_previous_stages_last_layer_on_both_losses(batch):
    plain, overlap = (
        learner(depth=4, local_blocks=2),
        learner(depth=4, local_blocks=2, local_overlap=1),
    )
    theta = plain.init(jax.random.key(0))
    g_plain = jax.grad(lambda t: plain.loss(t, batch)[0])(theta)
    g_over = jax.grad(lambda t: overlap.loss(t, batch)[0])(theta)
    g1 = jax.grad(lambda t: block_loss(overlap, t, batch, 1))(theta)
    shared = ("stages", 0, "blocks", 1)  # the last layer of stage 0

    def at(tree, path):
        for p in path:
            tree = tree[p]
        return tree

    assert close(
        at(g_over, shared), jax.tree_util.tree_map(jnp.add, at(g_plain, shared), at(g1, shared))
    )
    assert close(g_over["stages"][0]["blocks"][0], g_plain["stages"][0]["blocks"][0])
    assert close(g_over["stages"][1], g_plain["stages"][1])
    flops = [lr.step_flops(theta, 6) for lr in (plain, overlap)]
    assert flops[1] > flops[0]  # the shared layer runs twice


@pytest.mark.parametrize(
    "model, bad",
    [
        (dict(depth=4, local_blocks=3), "local_blocks (3) must divide model.depth (4)"),
        (dict(depth=2, local_blocks=2, kind="lstm"), "needs model.kind transformer"),
        (dict(depth=4, local_blocks=2, local_overlap=3), "local_overlap must be in [0, 2]"),
        (dict(depth=4, local_overlap=1), "local_overlap must be in [0, 4]"),
    ],
)
def test_bad_local_settings_are_one_line(model, bad):
    with pytest.raises(UserError, match=None) as err:
        ModelConfig(width=16, heads=2, **model)
    assert bad in str(err.value) and "\n" not in str(err.value)


PIPELINE = textwrap.dedent(
    """
    import json, jax, numpy as np
    from flax import nnx
    from metalearn import data
    from metalearn.icl.learner import InContextLearner, ModelConfig
    from metalearn.icl.local import pipelined_value_and_grad
    from metalearn.icl.tokens import tokens

    fam = data.from_spec("projected:base=digits,dim=6")
    out = {}
    # (stages, devices): one stage per device, and two pipelines of 2 stages side by side
    for stages, devices in ((2, 2), (4, 4), (2, 4)):
        model = ModelConfig(depth=4, width=16, heads=2, local_blocks=stages)
        lr = InContextLearner.for_family(model, fam, 8)
        theta = lr.init(jax.random.key(0))
        b = fam.sample(jax.random.key(1), 8, 8)
        (loss, metrics), ref = jax.value_and_grad(lr.loss, has_aux=True)(theta, b)
        mesh = jax.make_mesh((devices,), ("stages",), devices=jax.devices()[:devices],
                             axis_types=(jax.sharding.AxisType.Auto,))
        run = jax.jit(lambda t: pipelined_value_and_grad(
            nnx.merge(lr.graphdef, t), lr.output_loss, t, tokens(b.x, b.y, 10), b.y,
            mesh=mesh, axis="stages", microbatches=4))
        p_loss, p_grad, p_metrics = run(theta)
        rel = [float(np.max(np.abs(a - r)) / np.max(np.abs(r)))
               for a, r in zip(jax.tree_util.tree_leaves(p_grad), jax.tree_util.tree_leaves(ref))]
        out[f"{stages}x{devices}"] = {"loss": [float(loss), float(p_loss)],
                       "accuracy": [float(metrics["accuracy"]), float(p_metrics["accuracy"])],
                       "grad_rel": max(rel), "leaves": len(rel),
                       "stages": len(p_grad["stages"]),
                       "stage_devices": len(jax.tree_util.tree_leaves(p_grad["stages"])[0]
                                            .sharding.device_set)}
    print(json.dumps(out))
    """
)


def test_pipeline_over_devices_gives_the_one_device_gradient():
    # also with data parallelism beside it: 2 pipelines of 2 stages on 4 devices
    out = run_on_devices(PIPELINE, 4)
    for stages, devices in ((2, 2), (4, 4), (2, 4)):
        r = out[f"{stages}x{devices}"]
        np.testing.assert_allclose(*r["loss"], rtol=1e-5)
        np.testing.assert_allclose(*r["accuracy"], rtol=1e-6)
        assert r["grad_rel"] < 1e-4, r
        assert r["leaves"] > 10
        assert r["stages"] == stages
        assert r["stage_devices"] == devices  # the stages' gradients where they were taken


def test_local_updates_meta_train_through_the_loop(tmp_path):
    from metalearn.icl.learner import SequenceObjective
    from metalearn.meta.loop import LoopConfig, meta_train
    from metalearn.meta.objective import backprop
    from metalearn.meta.optim import OptimConfig

    lr = learner(depth=2, local_blocks=2)
    objective = SequenceObjective(lr, FAMILY, 16, 8)
    loop = LoopConfig(steps=40, log_every=10, checkpoint_every=0, progress=False)
    meta_train(objective.init, backprop(objective), OptimConfig(lr=3e-3), loop, tmp_path)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"block0_loss", "block1_loss", "loss"} <= set(log[0])
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]


TRAIN = textwrap.dedent(
    """
    import sys
    from metalearn.cli import main
    common = ["train", "local_updates", "--set", "model.depth=2", "--set", "model.width=16",
              "--set", "model.local_blocks=2", "--set", "batch_size=8", "--set", "loop.steps=6",
              "--set", "loop.log_every=2", "--set", "loop.progress=false",
              "--set", "eval.sequences=20", "--force"]
    assert main(common + ["--out", sys.argv[1]]) == 0
    assert main(common + ["--set", "local_pipeline=4", "--out", sys.argv[2]]) == 0
    print("{}")
    """
)


def test_pipelined_training_follows_the_one_program_curve(tmp_path):
    one, piped = tmp_path / "one", tmp_path / "piped"
    # 4 devices: two pipelines of the 2 stages, each on half of every microbatch
    run_on_devices(TRAIN, 4, str(one), str(piped))
    curves = []
    for d in (one, piped):
        log = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        curves.append([[r["loss"], r["grad_norm"], r["block0_loss"]] for r in log])
    assert len(curves[0]) == 3
    np.testing.assert_allclose(curves[1], curves[0], rtol=2e-5)


def test_pipeline_needs_one_device_per_stage():
    from metalearn.experiments.local_updates import Config

    config = Config(local_pipeline=4, model=ModelConfig(depth=8, width=16, local_blocks=8))
    with pytest.raises(UserError, match="need one device each .*; this job has 1"):
        config.setup()


def test_remat_keeps_the_gradient_and_cuts_the_step_memory():
    """`model.remat` (a checkpointed scan over the layers): the same gradient, and the compiled
    gradient's temporary memory (XLA's own count, no timing) well below the plain model's."""
    fam = data.from_spec("linear_regression:dim=8,noise=0.5")
    b = fam.sample(jax.random.key(1), 16, 32)
    grads, temp = {}, {}
    for remat in (False, True):
        for blocks in (1, 2):
            model = ModelConfig(depth=4, width=32, heads=4, remat=remat, local_blocks=blocks)
            lr = InContextLearner.for_family(model, fam, 32)
            theta = lr.init(jax.random.key(0))
            grad = jax.jit(jax.grad(lambda t, lr=lr: lr.loss(t, b)[0]))
            grads[remat, blocks] = grad(theta)
            temp[remat, blocks] = grad.lower(theta).compile().memory_analysis().temp_size_in_bytes
    for blocks in (1, 2):
        assert close(grads[True, blocks], grads[False, blocks])
    assert temp[True, 1] < 0.6 * temp[False, 1], temp
    with pytest.raises(UserError, match="model.remat needs model.kind transformer"):
        ModelConfig(kind="lstm", remat=True)


def test_study_reads_loss_against_total_and_critical_path_compute(tmp_path):
    from metalearn.experiments import local_updates as study

    for variant, losses in (("global", [4.0, 3.0, 2.0, 1.0]), ("local2", [4.0, 3.5, 3.0, 2.5])):
        point = tmp_path / "points" / f"variant={variant}"
        point.mkdir(parents=True)
        config = {"config": {"variant": variant, "loop": {"steps": 100}}}
        (point / "config.json").write_text(json.dumps(config))
        status = {"status": "done", "train_flops": 1e12, "wall_s": 5.0}
        (point / "status.json").write_text(json.dumps(status))
        logs = [json.dumps({"step": 25 * (i + 1), "loss": v}) for i, v in enumerate(losses)]
        (point / "metrics.jsonl").write_text("\n".join(logs) + "\n")
    rows = {r["variant"]: r for r in study.compute_curves(tmp_path)}
    assert rows["local2"]["critical_flops"][-1] == 0.5 * rows["local2"]["flops"][-1] == 5e11
    text = study.summary(tmp_path, last=1).splitlines()
    # local2 spent 5e11 critical-path FLOPs: global had spent them by its step 50 (loss 3.0)
    assert text[2].split()[:3] == ["local2", "2", "2.5000"] and text[2].split()[-2] == "3.0000"
    assert study.figure(tmp_path).exists()
