"""Task families: shapes, determinism, the finite pool, SPEC parsing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalearn import data
from metalearn.core.errors import UserError

SPECS = [
    "linear_regression:dim=5,noise=0.1",
    "projected:base=digits,dim=6",
    "random:dim=6,num_classes=4,items=3",
    "images:base=digits,num_classes=12",
    "sparse_linear:dim=6,sparsity=2",
    "relu_net:dim=5,hidden=7",
    "decision_tree:dim=5,depth=3",
    "bursty:dim=6,classes=40,heldout=5,num_classes=8,zipf=1",
]


@pytest.mark.parametrize("spec", SPECS)
def test_shapes_and_determinism(spec):
    fam = data.from_spec(spec)
    b1 = fam.sample(jax.random.key(3), 7, 9)
    b2 = fam.sample(jax.random.key(3), 7, 9)
    b3 = fam.sample(jax.random.key(4), 7, 9)
    assert b1.x.shape == (7, 9, fam.input_dim)
    assert b1.y.shape == (7, 9) and b1.task_id.shape == (7,)
    assert np.array_equal(b1.x, b2.x) and np.array_equal(b1.y, b2.y)
    assert not np.array_equal(b1.x, b3.x)
    if fam.num_classes is None:
        assert b1.y.dtype == jnp.float32
    else:
        assert jnp.issubdtype(b1.y.dtype, jnp.integer)
        assert int(b1.y.min()) >= 0 and int(b1.y.max()) < fam.num_classes
    assert np.all(np.asarray(b1.task_id) == -1)


def _task_fingerprints(fam, n):
    """Tasks are recovered from the data: regression weights by least squares, labels by
    repeating one probe input across sequences of the same task."""
    batch = fam.sample(jax.random.key(0), n, 64)
    w = jax.vmap(lambda x, y: jnp.linalg.lstsq(x, y)[0])(batch.x, batch.y)
    return np.round(np.asarray(w), 3), np.asarray(batch.task_id)


@settings(max_examples=5, deadline=None)
@given(m=st.integers(1, 6))
def test_pool_has_exactly_m_distinct_tasks(m):
    fam = data.make("linear_regression", dim=3, noise=0.0, num_tasks=m, seed=11)
    w, ids = _task_fingerprints(fam, 200)
    assert set(ids.tolist()) == set(range(m))  # 200 draws cover every index of a small pool
    distinct = {tuple(row) for row in w}
    assert len(distinct) == m
    for i in range(m):  # each pool index always names the same task
        assert len({tuple(row) for row in w[ids == i]}) == 1


def test_pool_is_seeded_and_unseen_is_disjoint():
    fam = data.make("linear_regression", dim=3, noise=0.0, num_tasks=4, seed=5)
    same = data.make("linear_regression", dim=3, noise=0.0, num_tasks=4, seed=5)
    other = data.make("linear_regression", dim=3, noise=0.0, num_tasks=4, seed=6)
    seen = {tuple(r) for r in _task_fingerprints(fam, 64)[0]}
    assert seen == {tuple(r) for r in _task_fingerprints(same, 64)[0]}
    assert seen.isdisjoint({tuple(r) for r in _task_fingerprints(other, 64)[0]})
    unseen = fam.sample(jax.random.key(1), 64, 64, "unseen")
    w = jax.vmap(lambda x, y: jnp.linalg.lstsq(x, y)[0])(unseen.x, unseen.y)
    assert seen.isdisjoint({tuple(r) for r in np.round(np.asarray(w), 3)})
    assert np.all(np.asarray(unseen.task_id) == -1)


def test_huge_pool_costs_nothing():
    fam = data.make("projected", base="digits", dim=4, num_tasks=2**24)
    batch = fam.sample(jax.random.key(0), 3, 5, "seen")
    assert batch.task_id.max() < 2**24 and batch.task_id.min() >= 0


def test_bias_pins_a_fraction_of_training_sequences_to_one_task():
    fam = data.make("linear_regression", dim=3, noise=0.0, bias=1.0)
    w, _ = _task_fingerprints(fam, 8)
    assert len({tuple(r) for r in w}) == 1
    # evaluation subsets are never biased
    ev = fam.sample(jax.random.key(0), 8, 64, "all")
    w = jax.vmap(lambda x, y: jnp.linalg.lstsq(x, y)[0])(ev.x, ev.y)
    assert len({tuple(r) for r in np.round(np.asarray(w), 3)}) == 8


def test_projected_is_a_projection_with_permuted_labels():
    fam = data.make("projected", base="digits", dim=5)
    task = fam.sample_task(jax.random.key(0))
    a, perm = task
    assert a.shape == (64, 5)
    assert sorted(np.asarray(perm).tolist()) == list(range(10))
    # A_ij ~ N(0, 1/D_in): the variance of the entries is about 1/64
    big = jax.vmap(fam.sample_task)(jax.random.split(jax.random.key(1), 50))[0]
    assert abs(float(jnp.var(big)) * 64 - 1) < 0.1


def test_spec_round_trip():
    fam = data.from_spec("projected:base=digits,dim=6,num_tasks=16")
    again = data.from_spec(fam.spec)
    assert again == fam or again.spec == fam.spec
    assert data.from_spec("linear_regression:num_tasks=none").num_tasks is None
    assert data.from_spec("linear_regression:num_tasks=2**24").num_tasks == 2**24


@pytest.mark.parametrize(
    "spec, words",
    [
        ("nonsense", ["unknown family", "'nonsense'", "linear_regression"]),
        ("linear_regression:bogus=1", ["unknown option", "'bogus'", "dim"]),
        ("linear_regression:dim=-3", ["dim", "-3", "positive"]),
        ("linear_regression:dim=abc", ["dim", "'abc'", "integer"]),
        ("linear_regression:num_tasks=0", ["num_tasks", "0"]),
        ("projected:base=digits,num_classes=5", ["10 classes", "num_classes=5"]),
        ("projected:base=/no/such/file.npz", ["does not exist", "/no/such/file.npz"]),
        ("projected:base=what", ["unknown base", "'what'", ".npz"]),
        ("projected:split=val", ["split", "'val'", "train"]),
        ("random:items=0", ["items", "0"]),
        ("projected:base=digits,size=0", ["size", "positive", "0"]),
        ("sparse_linear:dim=4,sparsity=5", ["sparsity", "1..dim (4)", "5"]),
        ("decision_tree:depth=0", ["depth", "1..12", "0"]),
        ("linear_regression:scale=0", ["scale", "> 0"]),
        ("linear_regression:orthant=true,orthogonal=true", ["orthant and orthogonal"]),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, words):
    with pytest.raises(UserError) as e:
        data.from_spec(spec)
    for w in words:
        assert w in str(e.value)


def test_one_input_size_for_every_dataset():
    """GPICL's input treatment: grayscale, resized, then z-normalized, whatever the base."""
    from metalearn.data.datasets import resized_gray

    rgb = np.zeros((2, 4, 4, 3), np.float32) + np.array([0.0, 3.0, 6.0], np.float32)
    rgb[1, :2] += 3.0  # the second image: a brighter top half
    gray = resized_gray("rgb", rgb.reshape(2, -1), 2).reshape(2, 2, 2)
    np.testing.assert_allclose(gray[0], 3.0, rtol=1e-6)  # the channels' mean
    # shrinking averages neighbours: the mean stays, the brighter half stays brighter
    np.testing.assert_allclose(gray[1].mean(), 4.5, rtol=1e-6)
    assert (gray[1, 0] > gray[1, 1] + 1.0).all()
    with pytest.raises(UserError, match="not square images"):
        resized_gray("odd", np.zeros((2, 7), np.float32), 2)
    fam = data.from_spec("projected:base=digits,dim=5,size=12")
    assert fam.base_size == (1437, 144) and fam.input_dim == 5
