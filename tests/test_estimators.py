"""Estimators for truncated unrolls, checked against exact backprop on influence balancing
(Tallec & Ollivier 2017; the PES paper, Vicol et al. 2021, sec. 5)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metalearn.core.errors import UserError
from metalearn.meta.estimators import (
    ESTIMATORS,
    full_es,
    mixture,
    nres,
    pes,
    truncated_backprop,
)
from metalearn.meta.loop import LoopConfig, meta_train
from metalearn.meta.optim import OptimConfig
from metalearn.meta.truncated import episode_loss, new_worker, unroll


@dataclasses.dataclass(frozen=True)
class InfluenceBalancing:
    """s <- A s + theta * sign, A = 0.5 I + 0.5 superdiagonal; loss 0.5 (s[0] - 1)^2.
    Short-term influence of theta on s[0] is +1, long-term -6: theta* = -1/6."""

    horizon: int | None = None
    n: int = 23

    def init(self, key):
        return jnp.ones(self.n)

    def step(self, theta, s, key):
        sign = jnp.concatenate([jnp.ones(10), -jnp.ones(self.n - 10)])
        s = 0.5 * s + 0.5 * jnp.concatenate([s[1:], jnp.zeros(1)]) + theta * sign
        return s, 0.5 * (s[0] - 1.0) ** 2


SGD = OptimConfig(kind="sgd", lr=1e-4, warmup=0, end_lr_ratio=1.0, clip=0.0)
LOOP = LoopConfig(steps=3000, log_every=0, checkpoint_every=0, progress=False)


def _train(estimator) -> float:
    return float(meta_train(lambda key: jnp.float32(0.5), estimator, SGD, LOOP).theta)


def test_truncated_backprop_drifts_away_from_the_optimum():
    theta = _train(truncated_backprop(InfluenceBalancing(), num_workers=1, truncation=1))
    assert theta > 3.0  # it follows the short-term influence, away from -1/6


def test_pes_with_truncation_one_finds_the_long_run_optimum():
    theta = _train(pes(InfluenceBalancing(), num_workers=500, truncation=1, sigma=0.1))
    assert abs(theta + 1 / 6) < 1e-3


EPISODIC = InfluenceBalancing(horizon=100)
THETA = jnp.float32(0.5)
WORKERS = 20000


@pytest.fixture(scope="module")
def exact() -> float:
    return float(jax.grad(lambda th: episode_loss(EPISODIC, th, jax.random.key(0)))(THETA))


@pytest.fixture(scope="module")
def samples():
    """One window's estimate from each of many workers at uniformly random windows."""
    out = {}
    for name in ("pes", "nres", "full_es", "truncated_es"):
        est = ESTIMATORS[name](EPISODIC, num_workers=WORKERS, truncation=10, sigma=0.1)
        state = jax.jit(est.init)(jax.random.key(1), THETA)
        grads, _, _ = jax.jit(est.per_worker)(THETA, state, jax.random.key(2))
        out[name] = np.asarray(grads, np.float64)
    return out


def influence_gradient_by_hand(theta: float, horizon: int, n: int = 23) -> float:
    """d/dtheta of the mean episode loss in float64, by forward sensitivities of the linear
    system (no autodiff): d_t = ds_t/dtheta obeys d_t = A d_{t-1} + sign, d_0 = 0."""
    a = 0.5 * np.eye(n) + 0.5 * np.eye(n, k=1)
    sign = np.concatenate([np.ones(10), -np.ones(n - 10)])
    s, d, total = np.ones(n), np.zeros(n), 0.0
    for _ in range(horizon):
        s, d = a @ s + theta * sign, a @ d + sign
        total += (s[0] - 1.0) * d[0]
    return total / horizon


def test_exact_meta_gradient(exact):
    by_hand = influence_gradient_by_hand(float(THETA), EPISODIC.horizon)
    assert abs(exact - by_hand) < 1e-4 * abs(by_hand)
    assert round(by_hand, 2) == 35.72  # the figure the README quotes


@pytest.mark.parametrize("name", ["pes", "nres", "full_es"])
def test_unbiased_estimators_match_exact_backprop(samples, exact, name):
    g = samples[name]
    assert abs(g.mean() - exact) < 3 * g.std() / np.sqrt(len(g))


def test_truncated_es_is_biased(samples, exact):
    g = samples["truncated_es"]
    assert abs(g.mean() - exact) > 10 * g.std() / np.sqrt(len(g))


def test_noise_reuse_has_lower_variance_than_pes(samples):
    assert samples["nres"].var() < 0.5 * samples["pes"].var()


def test_unroll_restarts_episodes():
    task = InfluenceBalancing(horizon=3)
    w = new_worker(task, jax.random.key(0))
    u = unroll(task, 0.0, w, jax.random.key(1), 7)
    np.testing.assert_array_equal(u.dones, [False, False, True, False, False, True, False])
    assert int(u.worker.t) == 1 and int(u.worker.episode) == 2
    # with theta = 0 the state only decays; each restart returns it to ones
    np.testing.assert_allclose(u.losses[:3], u.losses[3:6])


def test_pes_forgets_the_noise_of_a_finished_episode():
    task = InfluenceBalancing(horizon=3)
    est = pes(task, num_workers=4000, truncation=3, sigma=0.1, stagger=False)
    state = est.init(jax.random.key(0), THETA)
    window = jax.jit(est.per_worker)
    for i in range(5):  # every window ends an episode
        _, _, state = window(THETA, state, jax.random.key(i))
    assert np.all(np.asarray(state.pos.episode) == 5)
    # the accumulated noise is one window's (variance sigma^2), not five windows' (5 sigma^2)
    assert abs(float(jnp.var(state.accum)) / 0.1**2 - 1) < 0.1
    # windows within an episode do accumulate
    longer = pes(
        InfluenceBalancing(horizon=9), num_workers=4000, truncation=3, sigma=0.1, stagger=False
    )
    state = longer.init(jax.random.key(0), THETA)
    for i in range(2):
        _, _, state = jax.jit(longer.per_worker)(THETA, state, jax.random.key(i))
    assert abs(float(jnp.var(state.accum)) / 0.1**2 - 2) < 0.2


def test_mixture_weights_parts_by_workers():
    """Systems of different shapes (n = 23 and n = 12) share theta; each part sees its own key."""
    a = truncated_backprop(InfluenceBalancing(horizon=20), num_workers=3, truncation=4)
    b = pes(InfluenceBalancing(horizon=20, n=12), num_workers=1, truncation=4, sigma=0.1)
    mix = mixture((a, b))
    key, k_step = jax.random.key(0), jax.random.key(1)
    state = mix.init(key, THETA)
    est = mix.estimate(THETA, state, k_step, 0)
    parts = [
        p.estimate(THETA, s, jax.random.fold_in(k_step, i), 0)
        for i, (p, s) in enumerate(zip(mix.parts, state, strict=True))
    ]
    np.testing.assert_allclose(est.grad, 0.75 * parts[0].grad + 0.25 * parts[1].grad, rtol=1e-6)
    np.testing.assert_allclose(est.metrics["loss/1"], parts[1].loss)
    assert est.state[1].pos.inner.shape == (1, 12)
    with pytest.raises(UserError, match="at least one"):
        mixture(())


def test_bad_estimator_settings():
    with pytest.raises(UserError, match="multiple of the truncation"):
        nres(InfluenceBalancing(horizon=25), truncation=10)
    with pytest.raises(UserError, match="horizon is None"):
        full_es(InfluenceBalancing())
    with pytest.raises(UserError, match="sigma"):
        pes(EPISODIC, sigma=0.0)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_runs_and_repeats(name):
    """Every registered estimator, with the same keywords: a finite estimate, and the same
    numbers from the same keys."""
    est = ESTIMATORS[name](InfluenceBalancing(horizon=6), num_workers=4, truncation=3, sigma=0.1)
    step = jax.jit(est.estimate)
    runs = [step(THETA, est.init(jax.random.key(0), THETA), jax.random.key(1), 0) for _ in range(2)]
    assert np.isfinite(float(runs[0].loss)) and np.isfinite(float(runs[0].grad))
    assert float(runs[0].grad) == float(runs[1].grad) and float(runs[0].loss) == float(runs[1].loss)


def test_remat_unroll_gives_the_same_truncated_gradient():
    """tbptt with `remat` recomputes inner steps in the backward pass: same estimate."""
    task = InfluenceBalancing(horizon=20)
    plain, remat = (
        truncated_backprop(task, num_workers=3, truncation=5, remat=r) for r in (False, True)
    )
    state = plain.init(jax.random.key(0), THETA)
    a, b = (jax.jit(e.estimate)(THETA, state, jax.random.key(1), 0) for e in (plain, remat))
    np.testing.assert_allclose(a.grad, b.grad, rtol=1e-6)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
