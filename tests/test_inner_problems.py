"""Inner problems: the image family, the CNN and patch-transformer models, sampled problem
families, and every learned optimizer training a CNN (4-d kernels)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.data.datasets import load_normalized
from metalearn.lopt import MLP, ConvNet, InnerProblem, PatchTransformer, ProblemFamily
from metalearn.lopt.training import train_run
from tests.test_lopt_architectures import SMALL


def test_images_are_the_base_with_permuted_labels():
    fam = data.from_spec("images:base=digits")
    assert fam.image_shape == (8, 8, 1) and fam.input_dim == 64
    x_base, y_base = load_normalized("digits")
    perm = fam.sample_task(jax.random.key(0))
    assert sorted(np.asarray(perm).tolist()) == list(range(10))
    x, y = fam.sample_sequence(perm, jax.random.key(1), 32)
    # every drawn input is a base image, labelled by the task's permutation of its label
    rows = [int(np.argmin(np.abs(x_base - np.asarray(xi)).sum(1))) for xi in x]
    np.testing.assert_allclose(x_base[rows], x, atol=1e-6)
    assert np.array_equal(np.asarray(perm)[y_base[rows]], np.asarray(y))
    plain = data.from_spec("images:base=digits,permute=false")
    assert np.array_equal(plain.sample_task(jax.random.key(0)), np.arange(10))
    assert data.from_spec(fam.spec).spec == fam.spec


def test_images_need_square_images(tmp_path):
    path = tmp_path / "flat.npz"
    np.savez(path, x=np.zeros((6, 5), np.float32), y=np.arange(6) % 2)
    with pytest.raises(UserError, match="5 values, not a square image"):
        data.from_spec(f"images:base={path}")


def test_conv_layout_by_hand():
    """A 3x3 kernel with only its centre tap, stride 2, SAME padding on a 4x4 image keeps
    pixels (1, 1), (1, 3), (3, 1), (3, 3); then ReLU, a mean over positions, the head."""
    model = ConvNet((1,))
    params = model.init(jax.random.key(0), (4, 4, 1), 1)
    assert params["conv0"]["w"].shape == (3, 3, 1, 1) and params["head"]["w"].shape == (1, 1)
    w = np.zeros((3, 3, 1, 1), np.float32)
    w[1, 1, 0, 0] = 1.0
    params["conv0"]["w"], params["head"]["w"] = jnp.asarray(w), jnp.ones((1, 1))
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) - 6
    expected = np.maximum(img[0, 1::2, 1::2, 0], 0).mean()
    np.testing.assert_allclose(model.apply(params, jnp.asarray(img))[0, 0], expected, rtol=1e-6)


def test_transformer_reads_every_patch():
    model = PatchTransformer(width=8, depth=2, heads=2, patches=4)
    params = model.init(jax.random.key(0), (8, 8, 1), 10)
    x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
    out = jax.jit(model.apply)(params, x)
    assert out.shape == (3, 10) and bool(jnp.isfinite(out).all())
    sens = jax.jit(jax.grad(lambda x: model.apply(params, x)[0].sum()))(x)
    assert bool((jnp.abs(sens[0]) > 0).all()) and not bool(sens[1:].any())  # per example


@pytest.mark.parametrize(
    "spec, model",
    [
        ("projected:base=digits,dim=16|32x32|128", MLP((32, 32))),
        ("projected:base=digits,dim=16||128", MLP(())),
        ("projected:base=digits,dim=16|local:32x32|128", MLP((32, 32), local=True)),
        ("images:base=digits|conv:8x16|64", ConvNet((8, 16))),
        ("images:base=digits|transformer:32x2|64", PatchTransformer(32, 2)),
    ],
)
def test_problem_specs_round_trip(spec, model):
    problem = InnerProblem.from_spec(spec)
    assert problem.model == model and InnerProblem.from_spec(problem.spec) == problem


@pytest.mark.parametrize(
    "spec, words",
    [
        ("images:base=digits|cnn:8|64", ["inner model", "'cnn:8'", "conv:8x16"]),
        ("images:base=digits|transformer:32|64", ["'transformer:32'", "width x depth"]),
        ("images:base=digits|transformer:33x1|64", ["width 33", "heads=2"]),
        ("projected:base=digits,dim=16|conv:8|64", ["reads images", "images:base=digits"]),
        ("images:base=digits|conv:0|64", ["conv sizes", "0"]),
        ("projected:base=digits,dim=16|local:|64", ["'local:'", "local:32x32"]),
    ],
)
def test_bad_problems_say_what_is_wrong(spec, words):
    with pytest.raises(UserError) as e:
        InnerProblem.from_spec(spec).init(jax.random.key(0))
    for w in words:
        assert w in str(e.value)


def test_problem_family_draws():
    fam = ProblemFamily(widths=(4, 64), depths=(1, 3), batches=(8, 64))
    draws = fam.sample_many(jax.random.key(0), 24)
    assert [p.spec for p in draws] == [p.spec for p in fam.sample_many(jax.random.key(0), 24)]
    assert {type(p.model) for p in draws} == {MLP, ConvNet, PatchTransformer}
    for p in draws:
        assert 8 <= p.batch_size <= 64 and InnerProblem.from_spec(p.spec) == p
        if not isinstance(p.model, MLP):
            assert p.family.startswith("images")
    only_vectors = ProblemFamily(families=("projected:base=digits,dim=8",), kinds=("conv",))
    with pytest.raises(UserError, match="'conv' needs an image family"):
        only_vectors.sample(jax.random.key(0))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_learned_optimizer_trains_a_cnn(name):
    """Convolution kernels are 4-d: factored statistics, row blocks and tensor features must
    all take them."""
    lopt = SMALL[name]()
    problem = InnerProblem("images:base=digits", ConvNet((4,)), 8)
    losses, final = jax.jit(lambda k: train_run(lopt, lopt.init(jax.random.key(0)), problem, 3, k))(
        jax.random.key(1)
    )
    assert losses.shape == (3,) and bool(jnp.isfinite(losses).all()) and bool(jnp.isfinite(final))


def test_local_inner_mlp_trains_each_layer_on_its_own_head():
    """Local updates (Laskin et al. 2020) on an inner problem: the loss's value is the plain
    model's, hidden layer i is trained by head i alone, the output layer by the model's loss
    with its input stopped; the layers start as the plain MLP's."""
    local = InnerProblem("projected:base=digits,dim=8", MLP((16, 16), local=True), 32)
    plain = InnerProblem("projected:base=digits,dim=8", MLP((16, 16)), 32)
    p_local, p_plain = local.init(jax.random.key(0)), plain.init(jax.random.key(0))
    for name in ("layer0", "layer1", "layer2"):
        np.testing.assert_array_equal(p_local.params[name]["w"], p_plain.params[name]["w"])
    key = jax.random.key(1)
    value, grad = jax.value_and_grad(local.loss)(p_local.params, p_local.task, key)
    np.testing.assert_allclose(value, plain.loss(p_plain.params, p_plain.task, key), rtol=1e-6)
    x, y = local.fam.sample_sequence(p_local.task.data, key, 32)

    def head_loss(params, i):
        out = local.model.outputs(params, x)[i]
        return optax_ce(out, y)

    for i, layer in ((0, "layer0"), (1, "layer1"), (2, "layer2")):
        own = jax.grad(head_loss)(p_local.params, i)
        np.testing.assert_allclose(grad[layer]["w"], own[layer]["w"], rtol=1e-5, atol=1e-7)
    g_plain = jax.grad(plain.loss)(p_plain.params, p_plain.task, key)
    assert not np.allclose(grad["layer0"]["w"], g_plain["layer0"]["w"], atol=1e-6)


def optax_ce(out, y):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()


def test_local_inner_mlp_is_trained_by_a_learned_optimizer():
    lopt = SMALL[sorted(SMALL)[0]]()
    problem = InnerProblem.from_spec("projected:base=digits,dim=8|local:8|16")
    losses, final = jax.jit(lambda k: train_run(lopt, lopt.init(jax.random.key(0)), problem, 3, k))(
        jax.random.key(1)
    )
    assert losses.shape == (3,) and bool(jnp.isfinite(losses).all()) and bool(jnp.isfinite(final))
