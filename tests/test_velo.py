"""VeLO: its released-weights file format (round trip, old encodings, bad files) and updates
computed by hand for small known weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from metalearn.core.errors import UserError
from metalearn.lopt.velo import FRACTIONS, LSTM_FEATURES, VeLO, _loss_decays, _lstm_features
from metalearn.lopt.velo_weights import load_velo, save_velo

SMALL = VeLO(num_steps=10, lstm_hidden=2, param_inits=2)


def _tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_released_layout_has_the_released_size():
    theta = jax.eval_shape(VeLO().init, jax.random.key(0))
    assert sum(x.size for x in jax.tree_util.tree_leaves(theta)) == 2_320_385
    assert theta["rnn_params"]["rnn/linear"]["w"].shape == (1024, 2048)
    assert theta["ff_mod_stack"]["~"]["w0__3"].shape == (256, 3, 4)
    assert theta["rnn_params"]["linear_1"]["w"].shape == (LSTM_FEATURES, 512)


def test_round_trip(tmp_path):
    theta = SMALL.init(jax.random.key(3))
    save_velo(theta, tmp_path / "params", gen_id="abc", step=7)
    raw = serialization.msgpack_restore((tmp_path / "params").read_bytes())
    assert set(raw) == {"params", "gen_id", "step"} and raw["step"] == 7
    assert set(raw["params"]["rnn_params"]) == {
        "linear", "linear_1", "linear_2", "rnn/linear", "rnn_to_controls", "step_size"
    }  # fmt: skip
    velo, loaded = load_velo(tmp_path / "params", num_steps=10)
    assert (velo.lstm_hidden, velo.param_inits) == (2, 2)
    _tree_equal(loaded, theta)


def test_old_tuple_and_namedtuple_encodings(tmp_path):
    """learned_optimization's older checkpoints: the tuple (theta, gen_id, step), and flax's
    pre-2021 namedtuple encoding of the LSTM state."""
    theta = jax.tree_util.tree_map(np.asarray, SMALL.init(jax.random.key(4)))
    old = dict(theta)
    old["lstm_init_state"] = {
        "name": "LSTMState",
        "fields": {"0": "hidden", "1": "cell"},
        "values": {"0": theta["lstm_init_state"]["hidden"], "1": theta["lstm_init_state"]["cell"]},
    }
    path = tmp_path / "old.checkpoint"
    path.write_bytes(serialization.msgpack_serialize({"0": old, "1": "", "2": 0}))
    _, loaded = load_velo(path, num_steps=10)
    _tree_equal(loaded, theta)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_velo(tmp_path / "nope", num_steps=10)
    (tmp_path / "junk").write_bytes(b"\x00\x01 not msgpack")
    with pytest.raises(UserError, match="msgpack|VeLO"):
        load_velo(tmp_path / "junk", num_steps=10)
    theta = jax.tree_util.tree_map(np.asarray, SMALL.init(jax.random.key(5)))
    del theta["rnn_params"]["step_size"]
    save_velo(theta, tmp_path / "partial")
    with pytest.raises(UserError, match="rnn_params/step_size/b"):
        load_velo(tmp_path / "partial", num_steps=10)
    theta = jax.tree_util.tree_map(np.asarray, SMALL.init(jax.random.key(5)))
    theta["ff_mod_stack"]["~"]["w1"] = np.zeros((2, 4, 5), np.float32)
    save_velo(theta, tmp_path / "shape")
    with pytest.raises(UserError, match=r"ff_mod_stack/~/w1 has shape \(2, 4, 5\)"):
        load_velo(tmp_path / "shape", num_steps=10)


def _known_weights() -> dict:
    """A zero LSTM (so h = 0: controls and lr_mult are the output biases) and a bank of two
    MLPs that read only the normalized gradient: d = relu(mixed w0 * g / rms(g)), a = 200."""
    theta = jax.tree_util.tree_map(np.zeros_like, SMALL.init(jax.random.key(0)))
    theta = jax.tree_util.tree_map(np.asarray, theta)
    rnn, bank = theta["rnn_params"], theta["ff_mod_stack"]["~"]
    rnn["rnn_to_controls"]["b"][:] = [0.01, 0.03]  # mix(W) = 50 * (0.01 W[0] + 0.03 W[1])
    rnn["step_size"]["b"][:] = 1.5  # lr_mult
    bank["w0__0"][:, 0, 0] = [1.0, 3.0]  # mixed: 0.5 * 1 + 1.5 * 3 = 5
    bank["w1"][:] = np.eye(4) / 2  # mixed: identity
    bank["w2"][:, 0, 0] = 1.0  # direction = hidden unit 0 (mixed weight 2: 0.5 + 1.5)
    bank["b2"][:, 1] = 100.0  # log-magnitude 2 * 100 = 200
    return theta


def test_update_by_hand(tmp_path):
    save_velo(_known_weights(), tmp_path / "params")
    velo, theta = load_velo(tmp_path / "params", num_steps=10)
    opt = velo.optimizer(theta)
    params = {"b": jnp.array([1.0, -1.0, 2.0]), "w": jnp.array([[1.0, 2.0], [3.0, -4.0]])}
    grads = {"b": jnp.array([1.0, -2.0, 0.5]), "w": jnp.array([[0.5, -1.0], [2.0, 0.0]])}
    updates, state = opt.update(grads, opt.init(params), params, loss=jnp.float32(2.0))
    for k in params:
        g, p = np.asarray(grads[k], np.float64), np.asarray(params[k], np.float64)
        d = 2 * np.maximum(5 * g / np.sqrt(1e-5 + np.mean(g * g)), 0)
        step = 1.5 * d * np.exp(200 * 1e-3) * np.sqrt(np.mean(p * p) + 1e-9) * 1e-3
        np.testing.assert_allclose(updates[k], -step, rtol=1e-5, err_msg=k)
    assert int(state.iteration) == 1
    np.testing.assert_allclose(state.momenta["w"][..., 0], 0.1 * grads["w"], rtol=1e-6)
    # a second step runs from the carried LSTM state and stays finite
    updates, state = opt.update(grads, state, params, loss=jnp.float32(1.0))
    assert all(np.isfinite(u).all() for u in jax.tree_util.tree_leaves(updates))


def test_lstm_features_by_hand():
    p = jnp.array([[3.0, -3.0], [3.0, 3.0]])  # rms 3: statistics are taken at scale 1/3
    m = jnp.broadcast_to(jnp.array([0.3, 0.6, 0.9]), (2, 2, 3))
    rms = jnp.full((2, 2, 1), 0.03)
    loss = jnp.arange(9.0) / 10
    f = np.asarray(_lstm_features(p, m, rms, jnp.float32(0.5), loss))
    assert f.shape == (LSTM_FEATURES,)
    np.testing.assert_allclose(f[:9], np.tanh(10 * (0.5 - np.array(FRACTIONS))), rtol=1e-6)
    np.testing.assert_allclose(f[9:18], loss)
    cl = lambda x: 0.5 * np.clip(np.log(1e-8 + np.abs(10 * x)), -5, 5)  # noqa: E731
    np.testing.assert_allclose(f[18], cl(0.01), rtol=1e-5)
    np.testing.assert_array_equal(f[19:24], [0, 0, 1, 0, 0])  # two axes longer than 1
    np.testing.assert_allclose(f[24:27], cl(0.0))  # constant momenta: no spread
    np.testing.assert_allclose(f[27:30], cl((0.01 - np.array([0.1, 0.2, 0.3])) ** 2), rtol=1e-5)


def test_loss_features_by_hand():
    """Ten averages of the loss with half-lives from 10 to num_steps; the features compare
    each bias-corrected average with its running minimum."""
    velo = VeLO(num_steps=100, lstm_hidden=2, param_inits=2)
    theta = velo.init(jax.random.key(0))
    opt = velo.optimizer(theta)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    decays = np.exp(-1 / np.logspace(1, 2, 10))
    np.testing.assert_allclose(_loss_decays(100), decays, rtol=1e-6)
    means, low = np.zeros(10), np.full(10, 1e12)
    for k, loss in enumerate([4.0, 3.0, 100.0, 1.0]):
        _, state = opt.update({"w": jnp.ones(3)}, state, params, loss=jnp.float32(loss))
        corrected = means / (1 - decays ** (k + 1))
        cap = loss if k == 0 else corrected.max()
        means = decays * means + (1 - decays) * min(2 * abs(cap), loss)
        low = np.minimum(low, means / (1 - decays ** (k + 1)))
    np.testing.assert_allclose(state.loss.means, means, rtol=1e-5)
    np.testing.assert_allclose(state.loss.running_min, low, rtol=1e-5)
