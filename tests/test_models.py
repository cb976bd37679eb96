"""In-context learners: causality, token format, shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn import data
from metalearn.icl.learner import InContextLearner, ModelConfig
from metalearn.icl.tokens import tokens

L = 8


KINDS = ["transformer", "transformer-noshift", "lstm", "fast_weights"]


@pytest.fixture(scope="module", params=KINDS)
def model(request):
    kind = request.param.removesuffix("-noshift")
    cfg = ModelConfig(kind=kind, depth=2, width=16, heads=2, shift="noshift" not in request.param)
    fam = data.make("random", dim=4, num_classes=3, items=3)
    learner = InContextLearner.for_family(cfg, fam, L)
    theta = learner.init(jax.random.key(0))
    return learner, theta, fam


def test_tokens_pair_x_t_with_the_previous_label():
    x = jnp.arange(6, dtype=jnp.float32).reshape(1, 3, 2)
    y = jnp.array([[2, 0, 1]])
    tok = tokens(x, y, num_classes=3)
    assert tok.shape == (1, 3, 5)
    np.testing.assert_array_equal(tok[0, :, :2], x[0])
    np.testing.assert_array_equal(tok[0, 0, 2:], [0, 0, 0])  # nothing seen at t = 0
    np.testing.assert_array_equal(tok[0, 1, 2:], [0, 0, 1])  # y_0 = 2
    np.testing.assert_array_equal(tok[0, 2, 2:], [1, 0, 0])  # y_1 = 0
    reg = tokens(x, jnp.array([[0.5, -1.0, 2.0]]), num_classes=None)
    np.testing.assert_array_equal(reg[0, :, 2], [0.0, 0.5, -1.0])


def test_prediction_at_t_ignores_y_t_and_everything_after(model):
    learner, theta, fam = model
    batch = fam.sample(jax.random.key(1), 4, L)
    apply = jax.jit(learner.apply)
    base = apply(theta, batch.x, batch.y)
    for t in (0, 3, L - 1):
        y2 = batch.y.at[:, t:].set((batch.y[:, t:] + 1) % 3)
        x2 = batch.x.at[:, t + 1 :].add(5.0)
        out = apply(theta, x2, y2)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
        if t + 1 < L:  # and the change is visible later, so the test could fail
            assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_earlier_examples_do_change_the_prediction(model):
    learner, theta, fam = model
    batch = fam.sample(jax.random.key(2), 2, L)
    out = learner.apply(theta, batch.x, batch.y)
    y2 = batch.y.at[:, 0].set((batch.y[:, 0] + 1) % 3)
    assert not np.allclose(learner.apply(theta, batch.x, y2)[:, 1:], out[:, 1:])


def test_regression_head_and_loss():
    fam = data.make("linear_regression", dim=3)
    learner = InContextLearner.for_family(ModelConfig(depth=1, width=16), fam, L)
    theta = learner.init(jax.random.key(0))
    batch = fam.sample(jax.random.key(1), 4, L)
    assert learner.apply(theta, batch.x, batch.y).shape == (4, L)
    loss, metrics = learner.loss(theta, batch)
    assert np.isfinite(loss) and set(metrics) == {"loss", "mse"}
    log_loss, _ = learner.loss(theta, batch, "log")
    assert np.isfinite(log_loss) and not np.isclose(log_loss, loss)


def test_same_key_same_parameters():
    fam = data.make("linear_regression", dim=3)
    learner = InContextLearner.for_family(ModelConfig(depth=1, width=16), fam, L)
    a, b = learner.init(jax.random.key(5)), learner.init(jax.random.key(5))
    assert all(
        jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda u, v: bool((u == v).all()), a, b))
    )


def test_every_model_has_finite_nonzero_gradients(model):
    learner, theta, fam = model
    batch = fam.sample(jax.random.key(3), 4, L)
    grads = jax.grad(lambda th: learner.loss(th, batch)[0])(theta)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_state_sizes_follow_their_formulas():
    """A transformer's state grows with the length, an LSTM's with the width, the fast
    weights' with width^2 / heads (at one parameter count: heads change no parameter)."""
    t = ModelConfig(kind="transformer", depth=2, width=16, heads=2)
    assert t.state_size(10) == 2 * 2 * 10 * 16 and t.state_size(20) == 2 * t.state_size(10)
    assert ModelConfig(kind="lstm", depth=2, width=16).state_size(10) == 2 * 2 * 16
    fam = data.make("random", dim=4, num_classes=3, items=3)
    sizes, params = [], []
    for heads in (1, 4):
        cfg = ModelConfig(kind="fast_weights", depth=2, width=16, heads=heads)
        learner = InContextLearner.for_family(cfg, fam, L)
        params.append(learner.num_params(learner.init(jax.random.key(0))) - heads * 2 * 17)
        sizes.append(cfg.state_size(L))
    assert sizes == [2 * 16 * 16, 2 * 16 * 16 // 4]
    assert params[0] == params[1]  # beyond the per-head write rates, the same parameters


def test_fast_weight_memory_follows_the_delta_rule():
    """Two heads, the write rate saturated on the first: what is stored under a unit key reads
    back at that key, a second write under it replaces the first, a write under an orthogonal
    key leaves it alone; half the rate moves halfway."""
    from metalearn.icl.fast_weights import delta_write, read

    k = jnp.array([[0.6, 0.8, 0.0], [0.6, 0.8, 0.0]])
    k2 = jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    beta = jnp.array([1.0, 0.5])
    s = jnp.zeros((2, 3, 3))
    v1, v2 = jnp.array([[1.0, 2.0, 3.0]] * 2), jnp.array([[-1.0, 0.0, 1.0]] * 2)
    s = delta_write(s, k, v1, beta)
    np.testing.assert_allclose(read(s, k), [[1.0, 2.0, 3.0], [0.5, 1.0, 1.5]], rtol=1e-6)
    s = delta_write(s, k, v2, beta)
    np.testing.assert_allclose(read(s, k), [[-1.0, 0.0, 1.0], [-0.25, 0.5, 1.25]], rtol=1e-6)
    before = read(s, k)
    s = delta_write(s, k2, v1, beta)
    np.testing.assert_allclose(read(s, k), before, rtol=1e-6)
