"""The learned-optimizer architectures: shared statistics and updates computed by hand, and one
smoke test per registry entry (optax drop-in, flax NNX, finite meta-gradients)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from metalearn.lopt import LOPTS, AdafacMLPLOpt, RNNMLPLOpt, VeLO
from metalearn.lopt.accumulators import factored_dims, factored_init, factored_update
from metalearn.lopt.adafac_mlp_lopt import NUM_FEATURES, TIMESCALES
from metalearn.lopt.rnn_mlp_lopt import NUM_PARAM_FEATURES

SMALL = {
    "mlp": lambda: LOPTS["mlp"](hidden=4),
    "adafac_mlp": lambda: AdafacMLPLOpt(),
    "rnn_mlp": lambda: RNNMLPLOpt(hidden=4, lstm_hidden=8),
    "velo": lambda: VeLO(num_steps=6, lstm_hidden=8, param_inits=4),
}


def test_factored_dims():
    assert factored_dims((3, 5)) == (1, 0)
    assert factored_dims((5, 3)) == (0, 1)
    assert factored_dims((4, 4)) == (1, 0)  # ties keep axis order
    assert factored_dims((2, 7, 3)) == (1, 2)
    assert factored_dims((6,)) is None and factored_dims(()) is None


def test_factored_statistics_by_hand():
    g = np.array([[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]], np.float32)  # d0 = 0 (3 rows), d1 = 1
    decays = jnp.array([0.5])
    out = factored_update(factored_init(jnp.asarray(g), 1), jnp.asarray(g), decays)
    gs = g * g + 1e-30
    v_row = 0.5 * gs.mean(0)  # over d0: one per column
    v_col = 0.5 * gs.mean(1)  # over d1: one per row
    np.testing.assert_allclose(out.state.v_row[:, 0], v_row, rtol=1e-6)
    np.testing.assert_allclose(out.state.v_col[:, 0], v_col, rtol=1e-6)
    row_factor = (v_row / (v_row.mean() + 1e-9)) ** -0.5
    col_factor = v_col**-0.5
    expected = g * row_factor[None, :] * col_factor[:, None]
    np.testing.assert_allclose(out.fac_g(jnp.asarray(g))[..., 0], expected, rtol=1e-5)
    np.testing.assert_allclose(out.row[0, :, 0], v_row, rtol=1e-6)  # broadcast over rows
    assert out.row.shape == (1, 2, 1) and out.col.shape == (3, 1, 1)
    vec = factored_update(factored_init(jnp.ones(3), 1), jnp.array([1.0, 2.0, 3.0]), decays)
    np.testing.assert_allclose(vec.state.v_diag[:, 0], 0.5 * np.array([1.0, 4.0, 9.0]), rtol=1e-6)


def test_adafac_update_by_hand():
    """A linear MLP reading only the normalized gradient, and a learned momentum decay."""
    lopt = AdafacMLPLOpt(layers=0)
    theta = jax.tree_util.tree_map(jnp.zeros_like, lopt.init(jax.random.key(0)))
    w = np.zeros((NUM_FEATURES + len(TIMESCALES), 2), np.float32)
    w[0, 0] = 1.0
    theta["nn"]["~"]["w0"] = jnp.asarray(w)
    theta["momentum_decays"] = jnp.array([np.log(2.0) / 10, 0.0, 0.0])  # 0.9 -> 0.8
    opt = lopt.optimizer(theta)
    params = {"p": jnp.ones((2, 3))}
    g = jnp.array([[1.0, 2.0, 0.0], [0.0, -2.0, 1.0]])
    updates, state = opt.update({"p": g}, opt.init(params), params)
    expected = -1e-3 * g / np.sqrt(1e-5 + np.mean(np.square(g)))
    np.testing.assert_allclose(updates["p"], expected, rtol=1e-5)
    np.testing.assert_allclose(state.momenta["p"][..., 0], 0.2 * g, rtol=1e-5)
    np.testing.assert_allclose(state.momenta["p"][..., 1], 0.01 * g, rtol=1e-5)


def test_rnn_mlp_update_by_hand():
    """A linear MLP reading only the normalized gradient, after the dynamic clipper (which
    starts at 10 x 0.01 / (1 - 0.99) = 10)."""
    lopt = RNNMLPLOpt(layers=0, lstm_hidden=4)
    theta = jax.tree_util.tree_map(jnp.zeros_like, lopt.init(jax.random.key(0)))
    w = np.zeros((lopt.mlp_inputs, 2 + lopt.from_mlp), np.float32)
    w[0, 0] = 1.0
    theta["mlp"][0]["w"] = jnp.asarray(w)
    theta["mlp"][0]["b"] = jnp.arange(2.0 + lopt.from_mlp) * 0  # messages 0
    opt = lopt.optimizer(theta)
    params = {"p": jnp.ones(3)}
    g = jnp.array([1.0, -2.0, 30.0])
    updates, state = opt.update({"p": g}, opt.init(params), params, loss=1.0)
    clipped = np.array([1.0, -2.0, 10.0])
    expected = -1e-3 * clipped / np.sqrt(1e-5 + np.mean(clipped**2))
    np.testing.assert_allclose(updates["p"], expected, rtol=1e-5)
    np.testing.assert_allclose(state.momenta["p"][:, 0], 0.5 * clipped, rtol=1e-6)
    assert NUM_PARAM_FEATURES == 23 and state.from_mlp.shape == (1, lopt.from_mlp)


def test_channel_sums_in_blocks(monkeypatch):
    """Feature statistics summed a block of rows at a time (plus the rows left over), with a
    broadcast source, equal the sums over the whole tensor."""
    from metalearn.lopt import blocks

    a = jax.random.normal(jax.random.key(0), (37, 11, 2))
    col = jax.random.normal(jax.random.key(1), (1, 11, 2))  # broadcast along the rows

    def features(a, col):
        return [a[..., 0], a[..., 1] * col[..., 0], col[..., 1], jnp.exp(a[..., 0])]

    whole = np.stack([np.sum(np.broadcast_to(f, (37, 11)) ** 2) for f in features(a, col)])
    monkeypatch.setattr(blocks, "BLOCK_FLOATS", 33)  # 3 rows per block: 12 blocks + 1 row
    np.testing.assert_allclose(blocks.channel_sums(features, (a, col), (37, 11)), whole, rtol=1e-5)
    scales = blocks.channel_scales(features, (a, col), (37, 11), 1e-5)
    np.testing.assert_allclose(scales, 1 / np.sqrt(1e-5 + whole / (37 * 11)), rtol=1e-5)


@pytest.mark.parametrize("shape", [(6, 200), (40, 3), (7,)])
def test_elementwise_mlp_is_the_mlp(shape):
    """The MLP unrolled over units equals the same MLP as matrix products on [N, channels],
    for broadcast channels (row and column statistics, entering through partial sums) and for
    tensors flattened for their short last axis."""
    from metalearn.lopt import blocks
    from metalearn.lopt.blocks import elementwise_mlp

    keys = jax.random.split(jax.random.key(0), 8)
    xs = [jax.random.normal(keys[0], shape), jax.random.normal(keys[1], shape[:-1] + (1,))]
    xs.append(jnp.tanh(xs[0]))
    xs.append(jnp.exp(xs[1]))  # a second row channel: one partial sum for both
    xs.append(jax.random.normal(keys[7], (1,) * (len(shape) - 1) + shape[-1:]))  # a column
    sizes = (5, 5, 4, 2)
    layers = [
        (jax.random.normal(k, (a, b)), jax.random.normal(jax.random.fold_in(k, 1), (b,)))
        for k, a, b in zip(keys[2:], sizes[:-1], sizes[1:], strict=False)
    ]
    h = jnp.stack([jnp.broadcast_to(x, shape) for x in xs], -1)
    for i, (w, b) in enumerate(layers):
        h = (jax.nn.relu(h) if i else h) @ w
        h = h + jnp.broadcast_to(b, h.shape)
    out = jax.jit(lambda xs: elementwise_mlp(layers, xs, shape))(xs)
    assert [o.shape for o in out] == [shape, shape]
    np.testing.assert_allclose(jnp.stack(out, -1), h, rtol=1e-5, atol=1e-5)

    def weighted(f):  # a scalar of the outputs, for gradients
        return lambda layers, xs: sum(jnp.sum(o * (k + 1)) for k, o in enumerate(f(layers, xs)))

    dense = blocks._dense_mlp
    grads = jax.grad(weighted(lambda w, x: elementwise_mlp(w, x, shape)), (0, 1))(layers, xs)
    expected = jax.grad(weighted(lambda w, x: dense(w, x, shape)), (0, 1))(layers, xs)
    assert grads[1][1].shape == xs[1].shape  # the broadcast channel's gradient is summed
    for g, e in zip(*map(jax.tree_util.tree_leaves, (grads, expected)), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layer 0 expects 5 inputs, got 2"):
        elementwise_mlp(layers, xs[:2], shape)


def test_big_mlp_in_blocks_of_rows_is_the_mlp(monkeypatch):
    """An MLP of more than DENSE_ABOVE weights runs as matrix products a block of rows at a
    time (a broadcast source passed whole, the rows left over as a smaller block): its outputs
    and gradients are those of the whole tensor as [N, channels] products."""
    from metalearn.lopt import blocks

    keys = jax.random.split(jax.random.key(0), 6)
    sources = [jax.random.normal(keys[0], (37, 11)), jax.random.normal(keys[1], (1, 11))]

    def features(a, col):
        return [a, a * col, jnp.tanh(a)]

    sizes = (3, 24, 24, 2)  # 696 weights
    layers = [
        (jax.random.normal(k, (a, b)) / a**0.5, jax.random.normal(jax.random.fold_in(k, 1), (b,)))
        for k, a, b in zip(keys[2:], sizes[:-1], sizes[1:], strict=False)
    ]

    def total(f):  # a scalar of the outputs, for gradients
        return lambda w, s: sum(jnp.sum(o * (k + 1)) for k, o in enumerate(f(w, s)))

    dense = lambda w, s: blocks._dense_mlp(w, features(*s), (37, 11))  # noqa: E731
    mlp = lambda w, s: blocks.per_parameter_mlp(w, features, s, (37, 11))  # noqa: E731
    monkeypatch.setattr(blocks, "MATMUL_FLOATS", 40)  # 3 rows per block: 12 blocks + 1 row
    out, grads = jax.value_and_grad(total(mlp), (0, 1))(layers, sources)
    expected, expected_grads = jax.value_and_grad(total(dense), (0, 1))(layers, sources)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    for g, e in zip(*map(jax.tree_util.tree_leaves, (grads, expected_grads)), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "adafac_mlp", "rnn_mlp", "velo"])
def test_blocks_of_rows_change_nothing(name, monkeypatch):
    """Big tensors have their feature statistics (and RNNMLPLOpt its MLP) computed a block of
    rows at a time, and their per-parameter MLP unrolled, or as matrix products a block of rows
    at a time; the updates are those of the whole tensor at once, by matrix products."""
    from metalearn.lopt import blocks

    learned = SMALL[name]()
    theta = learned.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4)
    params = {"a": jax.random.normal(keys[0], (37, 11)), "b": jax.random.normal(keys[1], (7, 5, 3))}
    grads = {"a": jax.random.normal(keys[2], (37, 11)), "b": jax.random.normal(keys[3], (7, 5, 3))}

    def updates():
        opt = learned.optimizer(theta)
        return opt.update(grads, opt.init(params), params, loss=1.0)

    monkeypatch.setattr(blocks, "DENSE_ABOVE", -1)  # every MLP as matrix products
    whole = jax.tree_util.tree_leaves(updates())  # small tensors: one block
    monkeypatch.setattr(blocks, "MATMUL_FLOATS", 40)  # 3 rows of "a", 2 of "b" per block
    products = jax.tree_util.tree_leaves(updates())
    monkeypatch.setattr(blocks, "DENSE_ABOVE", 10**6)  # every MLP unrolled
    monkeypatch.setattr(blocks, "BLOCK_FLOATS", 40)
    unrolled = jax.tree_util.tree_leaves(updates())  # updates and state (RNN's messages)
    for p, u, w in zip(products, unrolled, whole, strict=True):
        np.testing.assert_allclose(p, w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(u, w, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module", params=sorted(SMALL))
def small(request):
    lopt = SMALL[request.param]()
    return lopt, lopt.init(jax.random.key(0))


def _problem():
    params = {"w": jnp.linspace(-1, 1, 12).reshape(4, 3), "b": jnp.zeros(3), "s": jnp.ones(())}
    x = jnp.linspace(-1, 1, 20).reshape(5, 4)

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w"] + p["b"][None]) * p["s"] - 0.3) ** 2)

    return params, loss


def test_optax_drop_in(small):
    lopt, theta = small
    params, loss = _problem()
    opt = lopt.optimizer(theta)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params, loss=value)
        return optax.apply_updates(params, updates), state

    for _ in range(3):
        params, state = step(params, state)
    leaves = jax.tree_util.tree_leaves(params)
    assert all(bool(jnp.isfinite(x).all()) for x in leaves)
    assert params["w"].shape == (4, 3) and params["s"].shape == ()


def test_nnx_optimizer(small):
    lopt, theta = small
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    before = np.asarray(model.kernel[...])
    optimizer = nnx.Optimizer(model, lopt.optimizer(theta), wrt=nnx.Param)
    x = jnp.ones((5, 4))
    value, grads = nnx.value_and_grad(lambda m: jnp.mean(m(x) ** 2))(model)
    optimizer.update(model, grads, loss=value)
    assert not np.array_equal(np.asarray(model.kernel[...]), before)


def test_meta_gradient_through_inner_steps(small):
    """Backprop from the loss after two inner steps to every meta-parameter that acts on the
    update (the estimators do the same through `InnerTraining`; see test_lopt.py)."""
    lopt, theta = small
    params, loss = _problem()

    def meta_loss(theta):
        opt = lopt.optimizer(theta)
        p, s = params, opt.init(params)
        for _ in range(2):
            value, grads = jax.value_and_grad(loss)(p)
            updates, s = opt.update(grads, s, p, loss=value)
            p = optax.apply_updates(p, updates)
        return loss(p)

    grads = jax.jit(jax.grad(meta_loss))(theta)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_every_registered_optimizer_has_a_small_config():
    """A new entry of LOPTS is smoke-tested here (and in the tests above) from the day it is
    registered: it needs a small configuration in SMALL."""
    assert set(SMALL) == set(LOPTS)


def _types(tree):
    return jax.tree_util.tree_map(lambda x: (x.shape, x.dtype, x.weak_type), tree)


def test_bfloat16_scan_compiles_once_for_every_theta(small):
    """The state keeps one dtype structure from step to step (no weak types either), so a
    `lax.scan` over training steps with bfloat16 parameters works and updates stay bfloat16;
    built inside the caller's jit with theta an argument, the optimizer serves a second theta
    from the same compiled program (traced once)."""
    lopt, theta = small
    params, loss = _problem()
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)
    state = lopt.optimizer(theta).init(params)
    traces = []

    @jax.jit
    def train(theta, params, state):
        traces.append(1)  # runs once per trace
        opt = lopt.optimizer(theta)

        def step(carry, _):
            p, s = carry
            value, grads = jax.value_and_grad(loss)(p)
            updates, s = opt.update(grads, s, p, loss=value)
            return (optax.apply_updates(p, updates), s), value

        return jax.lax.scan(step, (params, state), None, length=3)

    (after, state_after), losses = train(theta, params, state)
    other = jax.tree_util.tree_map(lambda x: x * 0.5, theta)
    (_, state_again), _ = train(other, after, state_after)
    assert _types(state) == _types(state_after)
    assert all(p.dtype == jnp.bfloat16 for p in jax.tree_util.tree_leaves(after))
    assert bool(jnp.isfinite(losses).all())
    assert len(traces) == 1 and train._cache_size() == 1
    # the float32 state moves on (bfloat16 parameters may not: steps of ~1e-3 round away)
    leaves = jax.tree_util.tree_leaves
    pairs = zip(leaves(state_again), leaves(state_after), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)
