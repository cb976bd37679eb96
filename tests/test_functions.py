"""Garg et al.'s function classes and the input shifts: each target against a plain
computation, each shift's defining property, and linear regression's draws unchanged."""

import jax
import jax.numpy as jnp
import numpy as np

from metalearn import data


def test_linear_regression_draws_what_it_drew_before_the_shifts():
    fam = data.make("linear_regression", dim=3, noise=0.5)
    batch = fam.sample(jax.random.key(4), 2, 5)
    # the draws as written before the shared Gaussian inputs existed
    k_task, k_seq, _ = jax.random.split(jax.random.key(4), 3)
    w = jax.vmap(lambda k: jax.random.normal(k, (3,)))(jax.random.split(k_task, 2))
    for i, k in enumerate(jax.random.split(k_seq, 2)):
        k_x, k_eps = jax.random.split(k)
        x = jax.random.normal(k_x, (5, 3))
        np.testing.assert_array_equal(batch.x[i], x)
        np.testing.assert_array_equal(batch.y[i], x @ w[i] + 0.5 * jax.random.normal(k_eps, (5,)))


def test_sparse_linear_tasks_have_sparsity_nonzeros():
    fam = data.make("sparse_linear", dim=8, sparsity=3)
    w = jax.vmap(fam.sample_task)(jax.random.split(jax.random.key(0), 50))
    assert ((np.asarray(w) != 0).sum(1) == 3).all()
    # every coordinate is in some support: the support is drawn, not fixed
    assert ((np.asarray(w) != 0).sum(0) > 0).all()


def test_relu_net_and_tree_targets_match_a_plain_computation():
    x = np.asarray(jax.random.normal(jax.random.key(1), (16, 5)))
    net = data.make("relu_net", dim=5, hidden=7)
    w, a = map(np.asarray, net.sample_task(jax.random.key(2)))
    plain = np.array([sum(a[i] * max(w[i] @ xi, 0.0) for i in range(7)) for xi in x])
    np.testing.assert_allclose(net.target((w, a), jnp.asarray(x)), plain, rtol=1e-5, atol=1e-5)

    tree = data.make("decision_tree", dim=5, depth=3)
    feature, leaf = map(np.asarray, tree.sample_task(jax.random.key(3)))

    def walk(xi, node=0, level=0):  # a node's children: 2n+1 (x_f <= 0), 2n+2 (x_f > 0)
        if level == 3:
            return leaf[node - 7]
        return walk(xi, 2 * node + 1 + int(xi[feature[node]] > 0), level + 1)

    got = tree.target((jnp.asarray(feature), jnp.asarray(leaf)), jnp.asarray(x))
    np.testing.assert_allclose(got, [walk(xi) for xi in x], rtol=1e-6)
    assert len(set(np.round(np.asarray(got), 6))) > 1  # the inputs reach several leaves


def test_input_shifts_do_what_they_say():
    def inputs(**shift):
        return np.asarray(
            data.make("linear_regression", dim=4, **shift).inputs(jax.random.key(7), 3000)
        )

    plain = inputs()
    np.testing.assert_allclose(inputs(scale=3.0), 3.0 * plain, rtol=1e-6)
    signs = np.sign(inputs(orthant=True))
    assert (signs == signs[0][None]).all()
    first = inputs(orthogonal=True)[:4]
    gram = first @ first.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.diag(gram), (plain[:4] ** 2).sum(1), rtol=1e-4)
    # skew=1: covariance eigenvalues proportional to 1, 1/2, 1/3, 1/4, trace 4
    eig = np.sort(np.linalg.eigvalsh(np.cov(inputs(skew=1.0).T)))[::-1]
    want = 4 * np.array([1, 1 / 2, 1 / 3, 1 / 4]) / (1 + 1 / 2 + 1 / 3 + 1 / 4)
    np.testing.assert_allclose(eig, want, rtol=0.1)
